"""Interactive calls end to end: the real daemon on a real PostgreSQL, dialing through
the real `twilio` package into the simulator, whose callees hear the TwiML, press keys
(signed <Gather> action requests), hang up or are answering machines
(docs/campaigns.md#menus, docs/invariants.md#8)."""

from __future__ import annotations

import uuid

import asyncpg

from dialer.carrier.simulator import RunningSimulator
from dialer.service import Daemon
from tests.conftest import StartDaemon
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import wait_for
from tests.integration.test_engine import campaign_status
from tests.invariants import (
    assert_attempts_match_carrier,
    assert_counters_true,
    assert_no_overlapping_live_calls,
)

RECEPTION = "+34917000000"
MENU = {
    "1": {"outcome": "confirmed", "say": "Gracias {{first_name}}, su cita queda confirmada."},
    "2": {"outcome": "declined", "say": "Entendido, anulamos su cita."},
    "0": {"action": "transfer", "to": RECEPTION, "say": "Le pasamos con recepción."},
    "9": {"action": "opt_out", "say": "No volveremos a llamarle."},
    "*": {"action": "repeat"},
}
SCRIPT = "Hola {{first_name}}, le recordamos su cita. Pulse 1 para confirmar, 2 para anular."
# callee spec → (response, digits, outcome)
PLAN: list[tuple[str, str, str | None, str]] = [
    ("press:1", "confirmed", "1", "completed"),
    ("press:2", "declined", "2", "completed"),
    ("press:9", "opted_out", "9", "completed"),
    ("press:*,1", "confirmed", "*1", "completed"),
    ("press:0", "transferred", "0", "completed"),
    ("silent", "no_response", None, "completed"),
    ("hangup:2", "no_response", None, "completed"),
    ("machine:3", "voicemail", None, "machine"),
]


async def _done(conn: asyncpg.Connection, cid: uuid.UUID) -> None:
    async def completed() -> bool:
        return await campaign_status(conn, cid) == "completed"

    await wait_for(completed, 120, "the campaign to complete")


async def test_a_200_contact_menu_campaign_ends_with_exactly_the_expected_answers(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """Press 1, 2, 9, * then 1, 0, nothing, hang up mid-script, answering machine: each
    contact ends with its response, digits, outcome and disposition; opt-outs (only) are
    on do_not_call; transfers dialed reception with the caller id; machines heard the
    voicemail; nobody was called twice; counters equal the aggregates."""
    cid = await make_campaign(
        conn,
        status="draft",
        name="Recordatorio de citas",
        script_template=SCRIPT,
        menu=MENU,
        menu_repeats=1,
        machine_detection=True,
        voicemail_template="Hola {{first_name}}, le llamábamos por su cita. Llámenos.",
        language="es-ES",
        voice="Polly.Lucia",
        max_retries=2,
    )
    numbers = [madrid_number(i) for i in range(200)]
    for i, number in enumerate(numbers):
        sim.simulator.script(number, [PLAN[i % len(PLAN)][0]])
    await add_contacts(conn, cid, numbers, first_name="Ana")
    await start_daemon(max_concurrent_calls=100, calls_per_second=500, bucket_size=50)
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
    await _done(conn, cid)

    rows = await conn.fetch(
        """
        SELECT ct.phone_number, k.response, k.digits, k.outcome, k.status::text AS status,
               cc.call_status, cc.response AS cc_response, cc.responded_at
        FROM calls k JOIN contacts ct ON ct.id = k.contact_id
        JOIN campaign_contacts cc ON cc.contact_id = k.contact_id AND cc.campaign_id = k.campaign_id
        WHERE k.campaign_id = $1
        """,
        cid,
    )
    by_number = {r["phone_number"]: r for r in rows}
    assert len(rows) == 200  # one attempt each: an answer is never retried
    for i, number in enumerate(numbers):
        spec, response, digits, outcome = PLAN[i % len(PLAN)]
        r = by_number[number]
        got = (r["response"], r["digits"], r["outcome"], r["status"], r["call_status"], r["cc_response"])
        assert got == (response, digits, outcome, "completed", "completed", response), (spec, dict(r))
        assert r["responded_at"] is not None
        assert sim.simulator.dials_to(number) == 1
    opted = {numbers[i] for i in range(200) if PLAN[i % len(PLAN)][1] == "opted_out"}
    listed = {r["phone_number"]: r["reason"] for r in await conn.fetch("SELECT * FROM do_not_call")}
    assert set(listed) == opted
    assert all("Recordatorio de citas" in reason for reason in listed.values())

    for call in sim.simulator.calls:
        spec = PLAN[numbers.index(call.to) % len(PLAN)][0]
        assert call.params.get("MachineDetection") == ["DetectMessageEnd"]
        if spec == "press:0":
            assert [(leg.number, leg.caller_id) for leg in call.dialed] == [(RECEPTION, "+34910000000")]
        if spec.startswith("machine"):
            assert call.voicemail() == ["Hola Ana, le llamábamos por su cita. Llámenos."]
        if spec == "press:1":
            assert call.heard("Gracias Ana, su cita queda confirmada.")
        says = [h for h in call.transcript if h.verb == "Say"]
        assert all(h.attrs.get("voice") == "Polly.Lucia" for h in says), spec
        assert not call.app_errors, (spec, call.app_errors)

    await assert_counters_true(conn)
    await assert_attempts_match_carrier(conn, sim.simulator.calls)
    await assert_no_overlapping_live_calls(conn)


async def test_responses_are_counted_per_campaign_under_a_bounded_label_set(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """dialer_call_responses counts each answer under its campaign, by declared outcome
    or reserved response. One call is held an hour ahead so the campaign stays open (a
    finished campaign's series are pruned)."""
    cid = await make_campaign(conn, status="draft", script_template=SCRIPT, menu=MENU, menu_repeats=0)
    plan = {madrid_number(1): "press:1", madrid_number(2): "press:9", madrid_number(3): "silent",
            madrid_number(4): "press:2"}
    for number, spec in plan.items():
        sim.simulator.script(number, [spec])
    await add_contacts(conn, cid, list(plan))
    [held_back] = await add_contacts(conn, cid, [madrid_number(5)])
    await conn.execute("UPDATE campaign_contacts SET call_status = 'scheduled' WHERE contact_id = $1", held_back)
    await conn.execute(
        "INSERT INTO calls (campaign_id, contact_id, scheduled_at) VALUES ($1, $2, now() + interval '1 hour')",
        cid, held_back,
    )
    daemon: Daemon = await start_daemon()
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)

    def counts() -> dict[str, float]:
        return {
            s.labels["response"]: s.value
            for family in daemon.metrics.responses.collect()
            for s in family.samples
            if s.name.endswith("_total") and s.labels["campaign_id"] == str(cid)
        }

    async def counted() -> bool:
        return sum(counts().values()) == 4

    await wait_for(counted, 30, "four responses to be counted")
    assert counts() == {"confirmed": 1, "opted_out": 1, "no_response": 1, "declined": 1}


async def test_no_response_is_retried_when_asked_and_an_answer_ends_it(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """retry_no_response: silent, then silent, then press 2 → three calls, the last declined;
    a contact that stays silent is called max_retries + 1 times and ends no_response."""
    cid = await make_campaign(
        conn,
        status="draft",
        script_template=SCRIPT,
        menu=MENU,
        menu_repeats=0,
        retry_no_response=True,
        max_retries=2,
        retry_delay_minutes=0,
    )
    answers, silent = madrid_number(1), madrid_number(2)
    sim.simulator.script(answers, ["silent", "silent", "press:2"])
    sim.simulator.script(silent, ["silent"])
    await add_contacts(conn, cid, [answers, silent])
    await start_daemon()
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", cid)
    await _done(conn, cid)
    assert sim.simulator.dials_to(answers) == 3 and sim.simulator.dials_to(silent) == 3
    rows = await conn.fetch(
        "SELECT ct.phone_number, cc.call_status, cc.response FROM campaign_contacts cc "
        "JOIN contacts ct ON ct.id = cc.contact_id WHERE cc.campaign_id = $1",
        cid,
    )
    assert {r["phone_number"]: (r["call_status"], r["response"]) for r in rows} == {
        answers: ("completed", "declined"),
        silent: ("completed", "no_response"),
    }
    await assert_counters_true(conn)


async def test_an_opt_out_in_one_campaign_stops_another_campaign_from_dialing(
    conn: asyncpg.Connection, sim: RunningSimulator, start_daemon: StartDaemon
) -> None:
    """Invariant 8: a contact who opts out during campaign A's call, while pending in
    running campaign B, is never dialed by B — B's due call is cancelled as do_not_call."""
    a = await make_campaign(conn, status="draft", name="A", script_template=SCRIPT, menu=MENU)
    b = await make_campaign(conn, status="draft", name="B", script_template="Hola", max_retries=0)
    number = madrid_number(7)
    sim.simulator.script(number, ["press:9@5"])  # stays on A's line a while, then presses 9
    (contact,) = await add_contacts(conn, a, [number])
    await conn.execute("INSERT INTO campaign_contacts (campaign_id, contact_id) VALUES ($1, $2)", b, contact)
    await start_daemon()
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", a)

    async def on_the_line() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM calls WHERE status = 'in_progress'"))

    await wait_for(on_the_line, 30, "A's call to be live")
    await conn.execute("UPDATE campaigns SET status = 'active' WHERE id = $1", b)
    await _done(conn, a)
    await _done(conn, b)
    assert sim.simulator.dials_to(number) == 1
    assert (
        await conn.fetchval("SELECT call_status FROM campaign_contacts WHERE campaign_id = $1", b)
        == "do_not_call"
    )
    assert (
        await conn.fetchval("SELECT count(*) FROM calls WHERE campaign_id = $1 AND dialed_at IS NOT NULL", b)
        == 0
    )
    assert (
        await conn.fetchval("SELECT response FROM campaign_contacts WHERE campaign_id = $1", a) == "opted_out"
    )
    await assert_counters_true(conn)
