"""The simulator's own surface: Twilio-shaped REST, callback rules, knobs and records."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from dialer.carrier.simulator import (
    SIMULATOR_ACCOUNT_SID,
    SIMULATOR_AUTH_TOKEN,
    RunningSimulator,
)
from dialer.cli import build_parser
from tests.integration.carrier_helpers import ACCOUNT, FAST, FROM, TOKEN, Receiver, rec, sim  # noqa: F401 - fixtures used by name


@pytest.fixture
async def client(sim: RunningSimulator) -> AsyncIterator[Client]:
    """A plain twilio-python client on the simulator."""
    http = AsyncTwilioHttpClient()
    c = Client(ACCOUNT, TOKEN, http_client=http, environment={})
    c.api.base_url = sim.url
    yield c
    await http.close()


async def _create(client: Client, to: str, rec: Receiver, **extra: Any) -> Any:
    return await client.calls.create_async(
        to=to, from_=FROM, twiml="<Response/>", status_callback=rec.url + "/status", **extra
    )


async def test_only_requested_events_but_always_the_final_one(
    sim: RunningSimulator, client: Client, rec: Receiver
) -> None:
    """StatusCallbackEvent filters intermediate callbacks; the final one always comes."""
    sim.simulator.script("+34911000001", ["answered"])
    sim.simulator.script("+34911000002", ["answered"])
    await _create(client, "+34911000001", rec)
    await _create(client, "+34911000002", rec, status_callback_event=["ringing"])
    await sim.simulator.wait_idle(5)
    by_to = {
        to: [h.params["CallStatus"] for h in rec.at("/status") if h.params["To"] == to]
        for to in ("+34911000001", "+34911000002")
    }
    assert by_to == {"+34911000001": ["completed"], "+34911000002": ["ringing", "completed"]}


async def test_list_pages_and_filters_like_twilio(
    sim: RunningSimulator, client: Client, rec: Receiver
) -> None:
    """list_async follows next_page_uri through small pages, newest first, and honours
    To and StartTime> filters as twilio-python sends them."""
    sim.simulator.instant = True
    sids = [(await _create(client, "+34911000003", rec)).sid for _ in range(5)]
    await _create(client, "+34911000004", rec)
    await sim.simulator.wait_idle(5)
    listed = await client.calls.list_async(to="+34911000003", page_size=2)
    assert [c.sid for c in listed] == list(reversed(sids))
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await client.calls.list_async(to="+34911000003", start_time_after=later) == []
    earlier = datetime.now(UTC) - timedelta(hours=1)
    assert len(await client.calls.list_async(start_time_after=earlier, page_size=50)) == 6


async def test_error_bodies_are_twilio_shaped(sim: RunningSimulator) -> None:
    """Unauthenticated requests get 401 with Twilio's JSON error body."""
    async with aiohttp.ClientSession() as session:
        url = f"{sim.url}/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
        async with session.get(url) as response:
            body = await response.json()
    assert response.status == 401
    assert body == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }


async def test_failed_callbacks_are_retried_then_given_up(
    sim: RunningSimulator, client: Client, rec: Receiver
) -> None:
    """A callback answered with 5xx is retried; a flaky endpoint gets it on the second
    try, a broken one is given up after the last attempt and recorded."""
    sim.simulator.script("+34911000005", ["busy"])
    sim.simulator.script("+34911000006", ["busy"])
    flaky = await client.calls.create_async(
        to="+34911000005", from_=FROM, twiml="<Response/>", status_callback=rec.url + "/flaky"
    )
    broken = await client.calls.create_async(
        to="+34911000006", from_=FROM, twiml="<Response/>", status_callback=rec.url + "/broken"
    )
    await sim.simulator.wait_idle(5)
    (ok,) = sim.simulator.call(flaky.sid).status_callbacks()
    assert (ok.delivered, ok.attempts, ok.http_status) == (True, 2, 200)
    (lost,) = sim.simulator.call(broken.sid).status_callbacks()
    assert (lost.delivered, lost.attempts, lost.http_status) == (False, 3, 500)


async def test_held_create_responses_still_play_callbacks(
    sim: RunningSimulator, client: Client, rec: Receiver
) -> None:
    """While hold_create_responses is set the call exists and calls back, but the create
    response waits until the gate is cleared."""
    sim.simulator.instant = True
    sim.simulator.hold_create_responses.set()
    pending = asyncio.create_task(_create(client, "+34911000007", rec))
    await sim.simulator.wait_for_calls(1, within=5)
    await sim.simulator.wait_idle(5)
    assert not pending.done()
    assert rec.statuses() == ["completed"]
    sim.simulator.hold_create_responses.clear()
    created = await asyncio.wait_for(pending, 5)
    assert created.sid == sim.simulator.calls[0].sid


async def test_records_pacing_and_concurrency(sim: RunningSimulator, client: Client, rec: Receiver) -> None:
    """create_times and max_concurrent describe what the client did."""
    sim.simulator.settings = FAST.model_copy(
        update={
            "min_duration_seconds": 200,
            "max_duration_seconds": 200,
            "answered": 1,
            "busy": 0,
            "no_answer": 0,
            "failed": 0,
            "machine": 0,
        }
    )
    await asyncio.gather(*(_create(client, f"+3491100001{i}", rec) for i in range(4)))
    assert len(sim.simulator.create_times()) == 4
    assert sim.simulator.max_concurrent == 4
    await sim.simulator.wait_idle(5)
    assert sim.simulator.live == 0


def test_cli_registers_the_simulator_command() -> None:
    """`dialer simulator --host H --port N` parses, with defaults 127.0.0.1:8089."""
    args = build_parser().parse_args(["simulator", "--port", "9001"])
    assert (args.host, args.port) == ("127.0.0.1", 9001)
    assert callable(args.handler)
    assert build_parser().parse_args(["simulator"]).port == 8089
    assert SIMULATOR_ACCOUNT_SID == "AC" + "0" * 32
    assert SIMULATOR_AUTH_TOKEN == "simulator-auth-token"
