"""The console's pure parts: session cookies and CSRF tokens, the password hash, the
live hub's debouncing, SVG charts, and the "why nothing is being dialed" reasons."""

from __future__ import annotations

import asyncio
import contextlib
import re
import xml.etree.ElementTree as ET
from datetime import datetime, time, timedelta
from pathlib import Path

import pytest

from dialer.config import load_settings
from dialer.console.auth import Role, SessionCodec, SignInLimiter
from dialer.console.charts import bar_chart, bucket_unit, fill_buckets, timeline_chart
from dialer.console.live import LiveHub
from dialer.console.passwords import check_hash_format, hash_password, verify_password
from dialer.console.views import ordered_dispositions, safe_url
from dialer.errors import ConfigError
from dialer.status import DialingSnapshot, idle_reason, next_window

KEY = b"k" * 32


# ---------------------------------------------------------------- sessions


def test_session_cookie_round_trips_and_rejects_tampering() -> None:
    """A cookie decodes to its session; any changed byte, another key or expiry rejects it."""
    now = [1_000_000.0]
    codec = SessionCodec(KEY, 3600, clock=lambda: now[0])
    session = codec.issue(Role.READ_ONLY)
    value = codec.encode(session)
    assert codec.decode(value) == session
    sid, _role, expires, mac = value.split(".")
    assert codec.decode(f"{sid}.operator.{expires}.{mac}") is None  # role escalation
    assert codec.decode(value[:-1] + ("A" if value[-1] != "A" else "B")) is None
    assert SessionCodec(b"x" * 32, 3600, clock=lambda: now[0]).decode(value) is None
    assert codec.decode("garbage") is None and codec.decode(None) is None and codec.decode("é.a.b.c") is None
    now[0] += 3601
    assert codec.decode(value) is None


def test_csrf_token_is_bound_to_the_session() -> None:
    """A session's token passes; another session's, an empty or non-ASCII one fails."""
    codec = SessionCodec(KEY, 3600)
    a, b = codec.issue(Role.OPERATOR), codec.issue(Role.OPERATOR)
    assert a.sid != b.sid
    assert codec.csrf_ok(a, codec.csrf_token(a))
    assert not codec.csrf_ok(a, codec.csrf_token(b))
    assert not codec.csrf_ok(a, None) and not codec.csrf_ok(a, "") and not codec.csrf_ok(a, "ü")


def test_sign_in_limiter_blocks_after_the_limit_and_forgets_after_the_window() -> None:
    """Ten failures from one address block it (not others) until the window has passed."""
    now = [0.0]
    limiter = SignInLimiter(limit=10, window=60, clock=lambda: now[0])
    for _ in range(10):
        limiter.failed("10.0.0.1")
    assert limiter.blocked("10.0.0.1") and not limiter.blocked("10.0.0.2")
    now[0] = 61
    assert not limiter.blocked("10.0.0.1")


# ---------------------------------------------------------------- passwords and config


def test_password_hash_verifies_only_its_password() -> None:
    """hash_password → verify_password accepts the password and nothing else; salts differ."""
    encoded = hash_password("s3cret pass")
    assert verify_password("s3cret pass", encoded)
    assert not verify_password("s3cret pas", encoded)
    assert hash_password("s3cret pass") != encoded


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("plain-text-password", "is not a password hash"),
        ("scrypt$x$8$1$AAAA$AAAA", "malformed"),
        ("scrypt$1000$8$1$AAAA$AAAA", "out-of-range"),
        ("scrypt$1048576$32$1$AAAA$AAAA", "more memory"),
    ],
)
def test_malformed_password_hash_is_a_clear_error(bad: str, words: str) -> None:
    """A stored hash that is not ours is refused naming what is wrong."""
    with pytest.raises(ValueError, match=words):
        check_hash_format(bad)


@pytest.fixture
def no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Defaults and environment only: no config.toml in the working directory."""
    monkeypatch.delenv("DIALER_CONFIG", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("no_config_file")
def test_console_off_loopback_without_a_secret_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """console.host 0.0.0.0 with no token is one config-error line naming the fix."""
    monkeypatch.setenv("DIALER_CONSOLE__HOST", "0.0.0.0")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    lines = str(raised.value).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("config error: console: host 0.0.0.0 is not a loopback address: set console.token")
    monkeypatch.setenv("DIALER_CONSOLE__TOKEN", "x" * 20)
    assert load_settings().console.requires_sign_in


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("DIALER_CONSOLE__TOKEN", "short", "at least 16 characters"),
        ("DIALER_CONSOLE__PASSWORD_HASH", "hunter2", "is not a password hash"),
        ("DIALER_CONSOLE__PUBLIC_URL", "dialer.example.com", "absolute http(s) URL"),
    ],
)
@pytest.mark.usefixtures("no_config_file")
def test_bad_console_secrets_and_urls_name_the_key(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str, words: str
) -> None:
    """A too-short token, a non-hash password_hash or a relative public_url: one line each."""
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=re.escape(words)) as raised:
        load_settings()
    assert str(raised.value).startswith(f"config error: console.{key.split('__')[1].lower()}:")


# ---------------------------------------------------------------- live hub


async def test_hub_renders_once_per_interval_however_many_clients_and_notifications() -> None:
    """1,000 notifications and 20 subscribers cost one render per pass; every subscriber
    gets the latest value, and an unchanged snapshot is not sent again."""
    state = {"n": 0}
    renders: list[str] = []

    async def render(topic: str) -> list[tuple[str, str]]:
        renders.append(topic)
        return [("board", f"v{state['n']}")]

    hub = LiveHub(render, interval=0.2, idle_refresh=30)
    runner = asyncio.create_task(hub.run())
    async with contextlib.AsyncExitStack() as stack:
        boxes = [await stack.enter_async_context(hub.subscribe("board")) for _ in range(20)]
        state["n"] = 1
        for _ in range(1000):
            hub.notify("call")
        got = await asyncio.wait_for(asyncio.gather(*(b.next() for b in boxes)), 5)
        assert all(events == [("board", "v1")] for events in got)
        assert renders == ["board"]
        for _ in range(1000):
            hub.notify("call")  # nothing changed: rendered again, sent to no one
        await asyncio.sleep(0.5)
        assert len(renders) == 2
        assert not any(b._ready.is_set() for b in boxes)
    hub.close()
    await asyncio.wait_for(runner, 2)


async def test_hub_close_ends_subscriptions() -> None:
    """After close() a waiting subscriber's next() returns None (its stream ends)."""

    async def render(topic: str) -> list[tuple[str, str]]:
        return []

    hub = LiveHub(render, interval=0.1)
    async with hub.subscribe("board") as box:
        waiter = asyncio.create_task(box.next())
        await asyncio.sleep(0)
        hub.close()
        assert await asyncio.wait_for(waiter, 2) is None


# ---------------------------------------------------------------- charts


def test_bar_chart_is_valid_svg_with_escaped_labels_and_numbers_as_text() -> None:
    """The SVG parses as XML, has a title and description, prints each value, escapes labels."""
    svg = str(bar_chart("c1", "Outcomes <b>", [("<script>", 3), ("busy & co", 12)]))
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag in ("svg", f"{ns}svg")
    texts = [t.text for t in root.iter() if t.tag.endswith("text")]
    assert "<script>" in texts and "busy & co" in texts and "12" in texts and "3" in texts
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert root.find("title") is not None or root.find(f"{ns}title") is not None
    assert 'style="' not in svg  # colours come from classes: CSP forbids inline style


def test_timeline_fills_gaps_and_renders_one_pair_of_bars_per_bucket() -> None:
    """Empty minutes between dials become zero buckets; every bucket has a dials and an answered bar."""
    t0 = datetime(2026, 3, 1, 9, 0)
    buckets = [(t0, 10, 6), (t0 + timedelta(minutes=3), 4, 1)]
    filled = fill_buckets(buckets, 60)
    assert [(b[0].minute, b[1], b[2]) for b in filled] == [(0, 10, 6), (1, 0, 0), (2, 0, 0), (3, 4, 1)]
    root = ET.fromstring(str(timeline_chart("t", "Dials", buckets, 60)))
    rects = [r for r in root.iter() if r.tag.endswith("rect")]
    assert len(rects) == 8
    assert "14 dials and 7 answered calls in 4 buckets (one per minute)" in str(timeline_chart("t", "Dials", buckets, 60))
    assert [bucket_unit(s) for s in (5, 60, 300, 3600, 7200, 86400)] == [
        "5 seconds", "minute", "5 minutes", "hour", "2 hours", "day"
    ]


def test_empty_charts_say_so_in_words() -> None:
    """No data renders a sentence, not an empty picture."""
    assert "nothing yet" in str(bar_chart("c", "Outcomes", []))
    assert "no calls dialed yet" in str(timeline_chart("t", "Dials", [], 60))


def test_view_helpers() -> None:
    """Dispositions come in reading order; only http(s) recording links are rendered."""
    assert ordered_dispositions({"failed": 1, "pending": 2, "weird": 3, "completed": 0}) == [
        ("pending", 2),
        ("failed", 1),
        ("weird", 3),
    ]
    assert safe_url("https://api.twilio.com/rec.mp3") and not safe_url("javascript:alert(1)")
    assert not safe_url(None)


# ---------------------------------------------------------------- why nothing is being dialed


def _snap(**changes: object) -> DialingSnapshot:
    base: dict[str, object] = {
        "status": "active",
        "last_error": None,
        "now": datetime(2026, 3, 2, 12, 0),  # a Monday, 13:00 in Madrid
        "contacts": 10,
        "open_contacts": 10,
        "live_calls": 0,
        "next_due_at": datetime(2026, 3, 2, 11, 0),
        "live_instances": 1,
        "zone": "Europe/Madrid",
        "in_calling_hours": True,
    }
    base.update(changes)
    return DialingSnapshot(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"status": "paused"}, "paused"),
        ({"status": "draft"}, "draft: not started"),
        ({"status": "completed"}, "completed: nothing left to dial"),
        ({"last_error": "unknown placeholder {{firstname}}"}, "last_error: unknown placeholder {{firstname}}"),
        ({"live_instances": 0}, "no daemon has a fresh heartbeat"),
        ({"contacts": 0}, "no contacts in the campaign"),
        (
            {"schedule_start": datetime(2026, 3, 2, 15, 30)},
            "schedule starts 2026-03-02 15:30 UTC (in 3 h 30 min)",
        ),
        ({"schedule_end": datetime(2026, 3, 1, 0, 0)}, "schedule ended 2026-03-01 00:00 UTC"),
        (
            {"in_calling_hours": False, "hours_start": time(16, 0), "hours_end": time(21, 0)},
            "waiting for calling hours (next window 16:00 Europe/Madrid, in 3 h 0 min)",
        ),
        (
            {"in_calling_hours": False, "hours_start": time(9, 0), "hours_end": time(12, 0), "days": [6, 7]},
            "outside calling days (next window Sat 09:00 Europe/Madrid, in 4 d 20 h)",
        ),
        (
            {"next_due_at": datetime(2026, 3, 2, 12, 45)},
            "next retry due 2026-03-02 12:45 UTC (in 45 min)",
        ),
        ({}, None),
        ({"live_calls": 3, "next_due_at": datetime(2026, 3, 2, 12, 45)}, None),
        ({"open_contacts": 0, "next_due_at": None}, None),
    ],
)
def test_idle_reason(changes: dict[str, object], reason: str | None) -> None:
    """Each situation gives its one line; a campaign that is dialing (or about to) gives none."""
    assert idle_reason(_snap(**changes)) == reason


def test_next_window_across_a_dst_change_counts_real_hours() -> None:
    """The wait to the next window is real elapsed time even across a clock change."""
    # Madrid springs forward on 2026-03-29 at 02:00; 20:00 Saturday → 09:00 Sunday is 12 h, not 13.
    snap = _snap(
        now=datetime(2026, 3, 28, 19, 0),
        in_calling_hours=False,
        hours_start=time(9, 0),
        hours_end=time(12, 0),
    )
    assert idle_reason(snap) == "waiting for calling hours (next window Sun 09:00 Europe/Madrid, in 12 h 0 min)"
    from zoneinfo import ZoneInfo

    local = datetime(2026, 3, 28, 20, 0, tzinfo=ZoneInfo("Europe/Madrid"))
    assert next_window(local, time(9, 0), [1, 2, 3, 4, 5]) == datetime(
        2026, 3, 30, 9, 0, tzinfo=ZoneInfo("Europe/Madrid")
    )


def test_hash_password_command_prints_a_hash_that_verifies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_config_file: None
) -> None:
    """`dialer console hash-password` reads stdin (not a terminal) and prints a usable hash;
    a short password is refused with exit 1."""
    import io

    from dialer.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert main(["console", "hash-password"]) == 0
    printed = capsys.readouterr().out.strip()
    assert verify_password("correct horse battery", printed)
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["console", "hash-password"]) == 1
    assert "at least 12 characters" in capsys.readouterr().err


async def test_hub_spends_at_most_its_duty_share_taking_snapshots() -> None:
    """When a snapshot is slow (a huge campaign), the next pass waits took / max_duty:
    with 50 ms snapshots and a 10 % duty, notifications for 0.6 s cause at most 2 passes,
    where the 10 ms interval alone would allow dozens."""
    renders: list[float] = []

    async def slow_render(topic: str) -> list[tuple[str, str]]:
        renders.append(asyncio.get_running_loop().time())
        await asyncio.sleep(0.05)
        return [("board", str(len(renders)))]

    hub = LiveHub(slow_render, interval=0.01, idle_refresh=30, max_duty=0.1)
    runner = asyncio.create_task(hub.run())
    async with hub.subscribe("board"):
        deadline = asyncio.get_running_loop().time() + 0.6
        while asyncio.get_running_loop().time() < deadline:
            hub.notify("call")
            await asyncio.sleep(0.005)
    hub.close()
    await asyncio.wait_for(runner, 2)
    assert 1 <= len(renders) <= 2, renders


@pytest.mark.usefixtures("no_config_file")
def test_upload_limit_must_fit_the_http_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """console.max_upload_bytes above half of http.max_buffered_bytes is a config error naming both."""
    monkeypatch.setenv("DIALER_CONSOLE__MAX_UPLOAD_BYTES", str(9 * 1024 * 1024))
    monkeypatch.setenv("DIALER_HTTP__MAX_BUFFERED_BYTES", str(16 * 1024 * 1024))
    with pytest.raises(ConfigError, match=r"console.max_upload_bytes \(9437184\) must be at most half"):
        load_settings()
    monkeypatch.setenv("DIALER_CONSOLE__ENABLED", "false")
    assert load_settings().console.max_upload_bytes == 9 * 1024 * 1024
