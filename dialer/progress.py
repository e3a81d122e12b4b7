"""How `campaign status` and `campaign list` look: counters, dispositions, a
progress bar of final dispositions over contacts, the dial rate, the next due call,
and a live view (`--watch`) that redraws until the campaign is final.

Rendering is pure (a snapshot in, a rich renderable out) so it is tested without a
terminal; rich prints plain text when stdout is not one. Everything that comes from the
database goes in as Text, never as a markup string, with control characters escaped:
a campaign named `[red]` or `oops [/nope]` is shown as written (docs/operations.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from dialer.models import CampaignStatus, Disposition
from dialer.status import idle_reason
from dialer.store.campaigns import CampaignProgress, CampaignSummary
from dialer.text import printable

# Dispositions in the order an operator reads them: open first, then final.
DISPOSITION_ORDER: tuple[str, ...] = tuple(Disposition)
STATUS_STYLE: dict[str, str] = {
    CampaignStatus.DRAFT: "dim",
    CampaignStatus.ACTIVE: "bold green",
    CampaignStatus.PAUSED: "yellow",
    CampaignStatus.COMPLETED: "bold blue",
    CampaignStatus.CANCELLED: "red",
}


def describe_due(due: datetime | None, now: datetime | None, held: str | None = None) -> str:
    """'2025-03-01 09:00:00 UTC (in 4m)', '… (due now)', or 'none'. A call that is due
    but held (`held`: the reason nothing is dialed, e.g. paused, calling hours) says
    so instead of "due now"."""
    if due is None:
        return "none"
    when = f"{due:%Y-%m-%d %H:%M:%S} UTC"
    if now is None:
        return when
    seconds = int((due - now).total_seconds())
    if seconds <= 0:
        return f"{when} (held: {held})" if held else f"{when} (due now)"
    return f"{when} (in {_duration(seconds)})"


def dialing_state(p: CampaignProgress) -> str | None:
    """'dialing', or why not (dialer.status.idle_reason); None when not read."""
    if p.dialing is None:
        return None
    return idle_reason(p.dialing) or ("dialing" if p.status == CampaignStatus.ACTIVE else p.status)


def status_line(p: CampaignProgress) -> str:
    """One line for `campaign status --watch` when stdout is not a terminal: printed
    each time it changes, so a log or a pipe gets one line per change."""
    live = p.dialing.live_calls if p.dialing is not None else p.pending_calls
    state = dialing_state(p) or p.status
    return (
        f"{printable(p.name)} {p.id} {p.status}: {p.finished_contacts}/{p.contacts} contacts final, "
        f"{p.successful_calls} successful, {p.failed_calls} failed, {live} live; {printable(state)}"
    )


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def dispositions_line(dispositions: dict[str, int]) -> str:
    """'pending 3, completed 5, failed 1' in reading order (unknown values last)."""
    ordered = [s for s in DISPOSITION_ORDER if dispositions.get(s)]
    ordered += sorted(s for s in dispositions if s not in DISPOSITION_ORDER and dispositions[s])
    return ", ".join(f"{s} {dispositions[s]}" for s in ordered) or "no contacts"


# The responses the daemon records itself, after a campaign's own outcomes.
RESPONSE_ORDER: tuple[str, ...] = ("opted_out", "transferred", "no_response", "voicemail")


def ordered_responses(responses: dict[str, int]) -> list[tuple[str, int]]:
    """(response, count), as an operator reads them: the campaign's outcomes (most
    frequent first), then the reserved responses; none with a zero count."""
    own = sorted((r for r in responses if r not in RESPONSE_ORDER), key=lambda r: (-responses[r], r))
    ordered = own + [r for r in RESPONSE_ORDER if r in responses]
    return [(r, responses[r]) for r in ordered if responses[r]]


def responses_line(responses: dict[str, int]) -> str:
    """'confirmed 120, declined 14, opted out 3, no response 40, voicemail 22': the
    campaign's outcomes (most frequent first), then the reserved responses."""
    return ", ".join(f"{r.replace('_', ' ')} {n}" for r, n in ordered_responses(responses))


def render_progress(p: CampaignProgress) -> RenderableType:
    """One campaign's status block."""
    title = Text.assemble(
        (printable(p.name), "bold"), f"  {p.id}  ", (p.status, STATUS_STYLE.get(p.status, ""))
    )
    done, total = p.finished_contacts, p.contacts
    percent = 100.0 * done / total if total else 0.0
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(total, 1), completed=done, width=40),
        Text(f"{done}/{total} contacts final ({percent:.0f}%)"),
    )
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row(
        "calls",
        Text(
            f"total {p.total_calls}, pending {p.pending_calls}, "
            f"successful {p.successful_calls}, failed {p.failed_calls}"
        ),
    )
    facts.add_row("dispositions", Text(printable(dispositions_line(p.dispositions))))
    if p.responses:
        facts.add_row("responses", Text(printable(responses_line(p.responses))))
    facts.add_row("dial rate", Text(f"{p.dialed_last_minute} calls in the last minute"))
    state = dialing_state(p)
    held = state if state is not None and state != "dialing" else None
    if state is not None:
        facts.add_row("now", Text(printable(state), style="" if held else "green"))
    facts.add_row("next due call", Text(printable(describe_due(p.next_due_at, p.now, held))))
    parts: list[RenderableType] = [title, bar, facts]
    if p.last_error:
        parts.append(Text(f"last error: {printable(p.last_error)}", style="bold red"))
    return Group(*parts)


def render_many(snapshots: Sequence[CampaignProgress]) -> RenderableType:
    """Several status blocks, separated by a blank line."""
    if not snapshots:
        return Text("no open campaigns")
    blocks: list[RenderableType] = []
    for i, snapshot in enumerate(snapshots):
        if i:
            blocks.append(Text(""))
        blocks.append(render_progress(snapshot))
    return Group(*blocks)


def render_list(rows: Sequence[CampaignSummary]) -> RenderableType:
    """The `campaign list` table."""
    if not rows:
        return Text("no campaigns")
    table = Table(box=None, pad_edge=False)
    for name in ("id", "name", "status", "contacts", "calls", "ok", "failed", "created (UTC)"):
        table.add_column(name, no_wrap=name == "id")
    for r in rows:
        table.add_row(
            str(r.id),
            Text(printable(r.name)),
            Text(r.status, style=STATUS_STYLE.get(r.status, "")),
            str(r.contacts),
            str(r.total_calls),
            str(r.successful_calls),
            str(r.failed_calls),
            f"{r.created_at:%Y-%m-%d %H:%M}",
        )
    return table


async def watch(
    fetch: Callable[[], Awaitable[list[CampaignProgress]]],
    console: Console,
    *,
    interval: float = 1.0,
    max_updates: int | None = None,
) -> list[CampaignProgress]:
    """Redraw the status of what `fetch` returns every `interval` seconds until every
    campaign shown is final (or Ctrl-C, which the caller handles). Returns the last
    snapshots. `max_updates` bounds the loop for tests."""
    snapshots = await fetch()
    updates = 1
    if not console.is_terminal:
        return await _watch_lines(fetch, console, snapshots, interval=interval, max_updates=max_updates)
    with Live(render_many(snapshots), console=console, refresh_per_second=4, transient=False) as live:
        while not (snapshots and all(s.is_final for s in snapshots)):
            if max_updates is not None and updates >= max_updates:
                break
            await asyncio.sleep(interval)
            snapshots = await fetch()
            updates += 1
            live.update(render_many(snapshots))
    return snapshots


async def _watch_lines(
    fetch: Callable[[], Awaitable[list[CampaignProgress]]],
    console: Console,
    snapshots: list[CampaignProgress],
    *,
    interval: float,
    max_updates: int | None,
) -> list[CampaignProgress]:
    """`watch` without a terminal: one line per campaign whenever its line changes,
    each stamped with the database's clock (UTC)."""
    shown: dict[object, str] = {}
    updates = 1
    while True:
        for snapshot in snapshots:
            line = status_line(snapshot)
            if shown.get(snapshot.id) != line:
                shown[snapshot.id] = line
                stamp = f"{snapshot.now:%Y-%m-%d %H:%M:%S} UTC " if snapshot.now else ""
                console.print(Text(stamp + line), soft_wrap=True)
        if snapshots and all(s.is_final for s in snapshots):
            return snapshots
        if max_updates is not None and updates >= max_updates:
            return snapshots
        await asyncio.sleep(interval)
        snapshots = await fetch()
        updates += 1
