-- 0008: every function of the schema runs with a fixed search_path, and only its owner
-- may call it directly (docs/supabase.md, Functions).
--
-- search_path: a function resolves the names in its body (tables, types, functions,
-- operators) through its caller's search_path unless it pins one, so a caller who
-- can create objects could make it run theirs. Pinned to the function's own schema,
-- then pg_temp (last: a temporary object never shadows anything).
--
-- EXECUTE: PostgreSQL grants it to PUBLIC on every new function, and Supabase's
-- default privileges grant it to anon, authenticated and service_role as well, which
-- publishes the functions through the REST API (/rest/v1/rpc/...). It is revoked
-- from everyone but the owner. Triggers keep working for every writer: PostgreSQL
-- checks EXECUTE on a trigger function when the trigger is created, not when it
-- fires. A daemon running as a role other than the owner needs
--     GRANT EXECUTE ON FUNCTION dialer_in_calling_hours, dialer_apply_call_event TO that_role;
--
-- Every function created later follows the same rule in its own migration (sql/README.md);
-- tests/integration/test_schema_security.py checks every function of the schema.
DO $$
DECLARE
    f record;
    grantee text;
BEGIN
    FOR f IN
        SELECT p.oid, p.oid::regprocedure AS signature, n.nspname AS schema_name, p.proowner
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = current_schema()
          AND p.proname LIKE 'dialer\_%'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f.signature, f.schema_name);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.signature);
        FOR grantee IN
            SELECT DISTINCT a.grantee::regrole::text
            FROM pg_proc p, aclexplode(p.proacl) AS a
            WHERE p.oid = f.oid AND a.grantee <> 0 AND a.grantee <> f.proowner
        LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', f.signature, grantee);
        END LOOP;
    END LOOP;
END;
$$;
