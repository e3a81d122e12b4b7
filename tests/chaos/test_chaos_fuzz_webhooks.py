"""Webhook fuzzing (docs/webhooks.md, docs/invariants.md#6): thousands of random, forged and malformed
requests against a running daemon process's webhook port. Only 400/403/404/405/413
come back (200 only for correctly signed requests), never a 5xx; no row changes; and
the daemon's memory stays flat."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from dialer import database
from dialer.carrier.simulator import SIMULATOR_AUTH_TOKEN, RunningSimulator
from tests.chaos.procs import DaemonProcess, daemons
from tests.factories import add_contacts, madrid_number, make_campaign
from tests.harness import wait_for

pytestmark = pytest.mark.slow

EXAMPLES = 2000
RSS_GROWTH_LIMIT = 25 * 1024 * 1024  # bytes
TABLES = ("campaigns", "contacts", "campaign_contacts", "calls", "do_not_call")
PATHS = ["/twilio/status", "/twilio/recording", "/twilio/twiml"]
FIELDS = [
    "CallSid", "CallStatus", "AccountSid", "CallDuration", "Timestamp", "SequenceNumber", "AnsweredBy",
    "ErrorCode", "ErrorMessage", "RecordingUrl", "RecordingSid", "RecordingStatus", "StartTime", "EndTime",
    "To", "From", "Direction",
]
STATUSES = ["queued", "initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed",
            "canceled", "bogus", ""]

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
field_value = st.one_of(
    st.sampled_from(STATUSES),
    st.text(max_size=40),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=300).map(lambda s: s * 3),
    st.just("CA" + "f" * 32),
)
form = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=12)), field_value, max_size=25)


@st.composite
def requests(draw: st.DrawFn, real_call_ids: list[str]) -> dict[str, Any]:
    """One request: method, path and query, headers, body, and whether it is signed."""
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    roll = draw(st.integers(0, 9))
    if roll < 8:  # mostly the real routes: that is where the gate must hold
        path = draw(st.sampled_from(PATHS))
    elif roll == 8:
        path = draw(st.sampled_from(PATHS)) + "/x"
    else:
        raw = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30))
        path = "/" + raw.replace("?", "").replace("#", "")
    call_id = draw(st.one_of(st.none(), st.sampled_from(real_call_ids), st.uuids().map(str), header_text))
    query = "" if call_id is None else "?" + urlencode({"call_id": call_id})
    fields = draw(form)
    kind = draw(st.sampled_from(["callback", "callback", "form", "raw", "huge", "empty"]))
    if kind == "callback":  # well-formed callbacks for calls that do not exist (random sids)
        fields = {**fields, "CallSid": "CA" + draw(st.uuids()).hex, "CallStatus": draw(st.sampled_from(STATUSES))}
        if draw(st.booleans()):
            fields.update(RecordingUrl="https://x.example/r", RecordingSid="RE1", RecordingStatus="completed")
        body = urlencode(fields).encode()
    elif kind == "form":
        body = urlencode(fields).encode()
    elif kind == "raw":
        body = draw(st.binary(max_size=2000))
    elif kind == "huge":
        body = b"CallSid=" + b"A" * draw(st.integers(64 * 1024, 200 * 1024))
    else:
        body = b""
    content_type = draw(st.sampled_from([
        "application/x-www-form-urlencoded", "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=latin-1", "application/json", "text/plain; x=\x01",
    ]))
    signing = draw(st.sampled_from(["none", "garbage", "wrong-url", "valid", "valid", "valid"]))
    method = "POST" if signing == "valid" and draw(st.booleans()) else method
    # Signed requests only ever name random calls: a correctly signed callback for a
    # real call is allowed to change it, which this test must not provoke.
    if signing == "valid" and call_id in real_call_ids:
        query = "?" + urlencode({"call_id": str(uuid.uuid4())})
    return {"method": method, "target": path + query, "body": body, "content_type": content_type,
            "signing": signing, "fields": fields if kind in ("form", "callback") else None, "garbage": draw(header_text)}


def _signature(validator: RequestValidator, public_url: str, req: dict[str, Any]) -> str | None:
    signing = req["signing"]
    if signing == "none":
        return None
    if signing == "garbage":
        return str(req["garbage"])
    params = req["fields"] if req["method"] == "POST" and req["fields"] is not None else {}
    url = public_url + req["target"]
    if signing == "wrong-url":
        url = "https://evil.example.com" + req["target"]
    return str(validator.compute_signature(url, params))


class _Client:
    """One keep-alive HTTP connection, reopened whenever the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def send(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> int:
        for _ in range(2):
            try:
                self.conn.request(method, target, body=body, headers=headers)
                response = self.conn.getresponse()
                response.read()
                if response.will_close:
                    self.conn.close()
                return response.status
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        raise AssertionError(f"no HTTP answer for {method} {target[:60]}")


async def _snapshot(conn: asyncpg.Connection) -> str:
    digest = hashlib.sha256()
    for table in TABLES:
        rows = await conn.fetch(f"SELECT t::text AS r FROM {table} t ORDER BY 1")
        for r in rows:
            digest.update(r["r"].encode())
    return digest.hexdigest()


async def test_fuzzed_webhooks_change_nothing_and_never_fail(
    db_url: str, chaos_sim: RunningSimulator, log_dir: Path
) -> None:
    """2,000 hypothesis-generated requests (forged, malformed, oversized, some signed):
    only 200 (signed) or 400/403/404/405/413, no 5xx, no row changed, RSS flat."""
    conn = await database.connect(db_url)
    try:
        cid = await make_campaign(conn, status="completed")
        ids = await add_contacts(conn, cid, [madrid_number(i) for i in range(20)])
        real_call_ids = []
        for i, contact_id in enumerate(ids):
            call_id = await conn.fetchval(
                "INSERT INTO calls (campaign_id, contact_id, status, call_sid, outcome, ended_at) "
                "VALUES ($1, $2, $3, $4, 'completed', now()) RETURNING id",
                cid, contact_id, "completed" if i % 2 else "failed", f"CA{i:032x}",
            )
            real_call_ids.append(str(call_id))
        daemon = DaemonProcess(db_url, chaos_sim.url, log_dir)
        with daemons(daemon):
            await daemon.start()

            async def checked() -> bool:
                return not await conn.fetchval("SELECT count(*) FROM contacts WHERE checked_at IS NULL")

            await wait_for(checked, 30, "the daemon's own housekeeping to settle")
            await asyncio.sleep(0.5)
            before = await _snapshot(conn)
            process = psutil.Process(daemon.pid)
            public_url = daemon.url
            validator = RequestValidator(SIMULATOR_AUTH_TOKEN)
            client = _Client(daemon.port)
            seen: dict[int, int] = {}
            rss: list[int] = []

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(req=requests(real_call_ids))
            def fuzz(req: dict[str, Any]) -> None:
                headers = {"Content-Type": req["content_type"]}
                signature = _signature(validator, public_url, req)
                if signature is not None:
                    headers["X-Twilio-Signature"] = signature
                status = client.send(req["method"], req["target"], req["body"], headers)
                seen[status] = seen.get(status, 0) + 1
                if sum(seen.values()) == 200:
                    rss.append(process.memory_info().rss)  # after warm-up
                assert status in (200, 400, 403, 404, 405, 413), (status, req["method"], req["target"][:80])
                if status == 200:
                    assert req["signing"] == "valid", req

            started = time.monotonic()
            await asyncio.to_thread(fuzz)
            elapsed = time.monotonic() - started
            rss.append(process.memory_info().rss)
            after = await _snapshot(conn)
            assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon survived"
            daemon.stop()
    finally:
        await conn.close()
    log_text = daemon.log_path.read_text()
    assert "Traceback" not in log_text, "a fuzzed request made the daemon log a traceback"
    print(f"\nwebhook fuzz: {sum(seen.values())} requests in {elapsed:.1f}s, statuses {dict(sorted(seen.items()))}, "
          f"RSS {rss[0] / 2**20:.1f} → {rss[-1] / 2**20:.1f} MiB")
    assert after == before, "a fuzzed request changed a row"
    assert rss[-1] - rss[0] < RSS_GROWTH_LIMIT
    assert seen.get(200, 0) > 0 and seen.get(403, 0) > 0
