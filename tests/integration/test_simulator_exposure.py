"""The simulator's credentials are published, so whoever can reach it chooses the URLs
it requests (docs/carrier.md#where-the-simulator-sends-requests): by default it posts
callbacks and fetches TwiML on loopback only, and it, like the demo, says so when it
listens beyond loopback."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from rich.console import Console
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from dialer.carrier.simulator import start_simulator
from dialer.config import HttpSettings, Settings
from dialer.demo import warn_if_exposed
from dialer.logs import configure_logging
from dialer.loopback import is_loopback_host, is_loopback_url
from tests.integration.carrier_helpers import ACCOUNT, FAST, FROM, TOKEN


def _own_address() -> str:
    """This machine's address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return ""
        return str(s.getsockname()[0])


@pytest.fixture
async def outside() -> AsyncIterator[tuple[str, list[str]]]:
    """A webhook receiver on every interface, addressed by this machine's non-loopback
    address (what an attacker would point the simulator at), and the paths it got."""
    address = _own_address()
    if not address or is_loopback_host(address):
        pytest.skip("this machine has no non-loopback address to test with")
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="<Response/>", content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", 0).start()
    port = runner.addresses[0][1]
    yield f"http://{address}:{port}", hits
    await runner.cleanup()


async def _place_call(sim_url: str, base: str) -> None:
    http = AsyncTwilioHttpClient()
    client = Client(ACCOUNT, TOKEN, http_client=http, environment={})
    client.api.base_url = sim_url
    try:
        await client.calls.create_async(
            to="+34911000001", from_=FROM, url=base + "/twiml", method="POST", status_callback=base + "/status"
        )
    finally:
        await http.close()


@pytest.mark.parametrize("allowed", [False, True])
async def test_requests_beyond_loopback_only_when_allowed(outside: tuple[str, list[str]], allowed: bool) -> None:
    """A call whose TwiML URL and status callback name a non-loopback address gets no
    request there (recorded as refused) unless simulator.allow_remote_callbacks."""
    base, hits = outside
    settings = FAST.model_copy(update={"allow_remote_callbacks": allowed})
    running = await start_simulator(settings, account_sid=ACCOUNT, auth_token=TOKEN)
    try:
        running.simulator.script("+34911000001", ["answered"])
        await _place_call(running.url, base)
        await running.simulator.wait_idle(5)
        (call,) = running.simulator.calls
        if allowed:
            assert "/twiml" in hits and "/status" in hits
        else:
            assert hits == []
            assert call.callbacks and all(r.error == "remote_url_refused" for r in call.callbacks)
            assert not any(r.attempts for r in call.callbacks)
    finally:
        await running.stop()


async def test_a_loopback_redirect_does_not_lead_it_elsewhere(outside: tuple[str, list[str]]) -> None:
    """A loopback callback URL answering 302 to a remote address is not followed."""
    base, hits = outside

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(base + "/stolen")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    loopback = f"http://127.0.0.1:{runner.addresses[0][1]}"
    running = await start_simulator(FAST, account_sid=ACCOUNT, auth_token=TOKEN)
    try:
        running.simulator.script("+34911000001", ["answered"])
        await _place_call(running.url, loopback)
        await running.simulator.wait_idle(5)
        (call,) = running.simulator.calls
        assert any(r.http_status == 302 for r in call.callbacks)
        assert hits == []
    finally:
        await running.stop()
        await runner.cleanup()


async def test_the_simulator_warns_when_listening_beyond_loopback() -> None:
    """Bound to 0.0.0.0 the simulator logs simulator_listening_beyond_loopback; on
    127.0.0.1 it does not."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        for host in ("127.0.0.1", "0.0.0.0"):
            running = await start_simulator(FAST, account_sid=ACCOUNT, auth_token=TOKEN, host=host)
            await running.stop()
    finally:
        structlog.reset_defaults()
    events: list[dict[str, Any]] = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    warned = [e for e in events if e["event"] == "simulator_listening_beyond_loopback"]
    assert [e["host"] for e in warned] == ["0.0.0.0"]
    assert warned[0]["level"] == "warning"


def test_the_demo_warns_when_its_daemon_listens_beyond_loopback() -> None:
    """`dialer demo` with http.host beyond loopback prints one warning line first."""
    for host, expected in (("127.0.0.1", False), ("::1", False), ("0.0.0.0", True), ("10.1.2.3", True)):
        out = io.StringIO()
        console = Console(file=out, width=200)
        assert warn_if_exposed(Settings(http=HttpSettings(host=host)), console) is expected
        printed = out.getvalue()
        assert ("warning" in printed) is expected
        if expected:
            assert host in printed


def test_loopback_means_literal_loopback_or_localhost() -> None:
    """Names other than localhost are not resolved (DNS could answer differently when
    connecting), so they count as remote."""
    assert is_loopback_url("http://127.0.0.1:8080/twilio/status?call_id=x")
    assert is_loopback_url("http://[::1]:8080/x")
    assert is_loopback_url("https://localhost/x")
    assert is_loopback_url("http://127.8.9.10/x")
    for url in ("http://0.0.0.0:80/x", "http://10.0.0.1/x", "http://localhost.evil.example/x",
                "http://169.254.169.254/latest/meta-data", "file:///etc/passwd", "http://[::ffff:8.8.8.8]/"):
        assert not is_loopback_url(url), url
