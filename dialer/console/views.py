"""Small formatting helpers the console's templates use (as Jinja filters), and the
bound port of a runner. Pure functions: tested without a server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from dialer.progress import DISPOSITION_ORDER, ordered_responses, responses_line
from dialer.status import duration

STATUS_SYMBOL = {
    # A symbol beside the word, so status never rests on colour alone.
    "draft": "○",
    "active": "▶",
    "paused": "⏸",
    "completed": "✓",
    "cancelled": "✕",
}


def utc(moment: datetime | None, seconds: bool = True) -> str:
    """'2025-03-01 09:00:05 UTC', or an em dash for none."""
    if moment is None:
        return "—"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if seconds else f"{moment:%Y-%m-%d %H:%M} UTC"


def num(value: int | float | None) -> str:
    """Thousands separated: 12,345."""
    if value is None:
        return "—"
    return f"{value:,}"


def rate(value: float | None) -> str:
    """Dials per second to one decimal ('12.5/s'), '—' when unknown."""
    if value is None:
        return "—"
    return f"{value:,.1f}/s"


def percent(done: int, total: int) -> str:
    """'41 %' of done over total (0 % for nothing)."""
    return f"{(100 * done // total) if total else 0} %"


def age(seconds: float) -> str:
    """'4 s', '3 min', '2 h 5 min'."""
    return duration(timedelta(seconds=seconds))


def symbol(status: str) -> str:
    """The symbol shown beside a campaign status."""
    return STATUS_SYMBOL.get(status, "•")


def days(value: list[int] | None) -> str:
    """ISO weekdays as 'Mon, Tue, Fri'."""
    if not value:
        return "every day"
    names = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    return ", ".join(names[d - 1] for d in sorted(value))


def safe_url(url: str | None) -> bool:
    """Only http(s) links are rendered (a recording URL is carrier data, not ours)."""
    return bool(url) and str(url).lower().startswith(("https://", "http://"))


def ordered_dispositions(dispositions: dict[str, int]) -> list[tuple[str, int]]:
    """(disposition, count) in the order an operator reads them, unknown ones last."""
    known = [(d, dispositions[d]) for d in DISPOSITION_ORDER if dispositions.get(d)]
    return known + sorted((d, n) for d, n in dispositions.items() if d not in DISPOSITION_ORDER and n)


GLOBALS: dict[str, Any] = {
    "ordered_dispositions": ordered_dispositions,
    "ordered_responses": ordered_responses,
    "responses_line": responses_line,
    "dispositions": DISPOSITION_ORDER,
}

FILTERS: dict[str, Callable[..., Any]] = {
    "safe_url": safe_url,
    "utc": utc,
    "num": num,
    "rate": rate,
    "age": age,
    "percent": percent,
    "symbol": symbol,
    "days": days,
}


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the runner's first site listens on (port 0 picks one)."""
    server = runner.addresses[0]
    return int(server[1])
