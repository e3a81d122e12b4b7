-- 0013: new rows of contacts, campaign_contacts and calls get time-ordered UUIDs
-- (the layout of UUID version 7: 48 bits of Unix milliseconds, then random bits),
-- so rows inserted together sit together in every index keyed by id
-- (docs/benchmarks.md#scale).
--
-- Why: with random keys (gen_random_uuid) each inserted row lands on a random leaf
-- of its primary key, and of every index keyed by a reference to it (calls and
-- campaign_contacts are indexed by contact_id four times over). Once a campaign's
-- indexes outgrow shared_buffers, a million-contact import or activation touches
-- almost every leaf page of each index per batch; after each checkpoint the first
-- change of a page writes the whole page to the WAL, and the WAL this makes brings
-- the next checkpoint sooner. Activating 310,000 of 1,000,000 contacts measured
-- 0.29 full-page images and 3.7 kB of WAL per contact with random ids, 0.05 and
-- 2.0 kB with time-ordered ones, and the server's CPU per contact fell from 2.6 to
-- 1.1 times that of a 10,000-contact campaign. Contacts imported together and their
-- campaign rows then share key order, heap order and contact_id order, so
-- activation walks all of them front to back.
--
-- The expression instead of PostgreSQL 18's uuidv7(): the same on every server
-- version the daemon supports, and no function whose EXECUTE right every writer
-- would need. The version nibble's low bits come from random() (the 74 other random
-- bits from gen_random_uuid); ids remain unique, unguessable enough for what they
-- are (row keys; every request that names one is signed), and reveal only when the
-- row was created, which the row says anyway (created_at). Existing rows keep their
-- ids.
ALTER TABLE contacts ALTER COLUMN id SET DEFAULT
    encode(set_byte(overlay(uuid_send(gen_random_uuid())
                            PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                            FROM 1 FOR 6),
                    6, 112 + floor(random() * 16)::int), 'hex')::uuid;
ALTER TABLE campaign_contacts ALTER COLUMN id SET DEFAULT
    encode(set_byte(overlay(uuid_send(gen_random_uuid())
                            PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                            FROM 1 FOR 6),
                    6, 112 + floor(random() * 16)::int), 'hex')::uuid;
ALTER TABLE calls ALTER COLUMN id SET DEFAULT
    encode(set_byte(overlay(uuid_send(gen_random_uuid())
                            PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                            FROM 1 FOR 6),
                    6, 112 + floor(random() * 16)::int), 'hex')::uuid;
