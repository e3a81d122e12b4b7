"""Charts as server-rendered SVG: no JavaScript, no library, readable with scripts off.

Every chart carries a `<title>` and a `<desc>` listing its numbers (screen readers
read those), prints each value as text beside its bar (colour is never the only
signal), and takes its colours from classes the stylesheet defines (no inline
style, so the console's Content-Security-Policy can forbid them). Every label is
escaped: campaign and outcome names are operator data.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from markupsafe import Markup

LABEL_WIDTH = 150
ROW_HEIGHT = 22
BAR_HEIGHT = 14
VALUE_GAP = 6


def _css_class(label: str) -> str:
    """A class suffix for a category: letters, digits and hyphens only."""
    return "".join(c if c.isalnum() else "-" for c in label.lower())[:40]


def bar_chart(chart_id: str, title: str, items: Sequence[tuple[str, int]], *, width: int = 520) -> Markup:
    """Horizontal bars, one per (label, value), each labelled and numbered. `chart_id`
    must be unique in the page (it names the title and description elements)."""
    if not items:
        return Markup('<p class="chart-empty">{}: nothing yet.</p>').format(title)
    peak = max(value for _, value in items) or 1
    room = width - LABEL_WIDTH - 60
    height = ROW_HEIGHT * len(items) + 8
    desc = ", ".join(f"{label} {value}" for label, value in items)
    parts = [
        Markup(
            '<svg class="chart bars" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
            'aria-labelledby="{id}-t {id}-d"><title id="{id}-t">{title}</title>'
            '<desc id="{id}-d">{desc}</desc>'
        ).format(w=width, h=height, id=chart_id, title=title, desc=desc)
    ]
    for row, (label, value) in enumerate(items):
        y = 4 + row * ROW_HEIGHT
        length = round(room * value / peak) if value else 0
        parts.append(
            Markup(
                '<text class="label" x="{lx}" y="{ty}" text-anchor="end">{label}</text>'
                '<rect class="bar bar-{cls}" x="{x}" y="{y}" width="{len}" height="{bh}"/>'
                '<text class="value" x="{vx}" y="{ty}">{value}</text>'
            ).format(
                lx=LABEL_WIDTH - 8,
                ty=y + BAR_HEIGHT - 2,
                label=label,
                cls=_css_class(label),
                x=LABEL_WIDTH,
                y=y,
                len=length,
                bh=BAR_HEIGHT,
                vx=LABEL_WIDTH + length + VALUE_GAP,
                value=f"{value:,}",
            )
        )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def fill_buckets(
    buckets: Sequence[tuple[datetime, int, int]], bucket_seconds: int
) -> list[tuple[datetime, int, int]]:
    """The buckets from the first to the last, with the empty ones in between as zeros."""
    if not buckets:
        return []
    step = timedelta(seconds=bucket_seconds)
    known = {start: (dials, answered) for start, dials, answered in buckets}
    filled: list[tuple[datetime, int, int]] = []
    moment, last = buckets[0][0], buckets[-1][0]
    while moment <= last:
        dials, answered = known.get(moment, (0, 0))
        filled.append((moment, dials, answered))
        moment += step
    return filled


def bucket_unit(seconds: int) -> str:
    """'10 seconds', 'minute', '5 minutes', 'hour', '6 hours'."""
    for size, one, many in ((86400, "day", "days"), (3600, "hour", "hours"), (60, "minute", "minutes")):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return one if n == 1 else f"{n} {many}"
    return "second" if seconds == 1 else f"{seconds} seconds"


def timeline_chart(
    chart_id: str,
    title: str,
    buckets: Sequence[tuple[datetime, int, int]],
    bucket_seconds: int,
    *,
    width: int = 640,
    height: int = 180,
) -> Markup:
    """Dials (wide, light bars) and answered calls (narrow, dark bars inside them) per
    bucket of `bucket_seconds`, with the peak and the first and last times labelled."""
    filled = fill_buckets(buckets, bucket_seconds)
    if not filled:
        return Markup('<p class="chart-empty">{}: no calls dialed yet.</p>').format(title)
    left, bottom, top = 44, 22, 10
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max(d for _, d, _ in filled) or 1
    slot = plot_w / len(filled)
    unit = bucket_unit(bucket_seconds)
    clock = "%H:%M:%S" if bucket_seconds < 60 else "%H:%M"
    total_dials = sum(d for _, d, _ in filled)
    total_answered = sum(a for _, _, a in filled)
    desc = (
        f"{total_dials} dials and {total_answered} answered calls in {len(filled)} buckets (one per {unit}), "
        f"from {filled[0][0]:%Y-%m-%d %H:%M} to {filled[-1][0]:%H:%M} UTC; at most {peak} dials per bucket"
    )
    parts = [
        Markup(
            '<svg class="chart timeline" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
            'aria-labelledby="{id}-t {id}-d"><title id="{id}-t">{title}</title>'
            '<desc id="{id}-d">{desc}</desc>'
            '<line class="axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}"/>'
            '<line class="axis" x1="{l}" y1="{t}" x2="{l}" y2="{b}"/>'
            '<text class="tick" x="{lt}" y="{tt}" text-anchor="end">{peak}</text>'
            '<text class="tick" x="{lt}" y="{b}" text-anchor="end">0</text>'
        ).format(
            w=width,
            h=height,
            id=chart_id,
            title=title,
            desc=desc,
            l=left,
            r=left + plot_w,
            t=top,
            b=top + plot_h,
            lt=left - 4,
            tt=top + 8,
            peak=peak,
        )
    ]
    for i, (_start, dials, answered) in enumerate(filled):
        x = left + i * slot
        dial_h = plot_h * dials / peak
        answer_h = plot_h * answered / peak
        parts.append(
            Markup(
                '<rect class="dials" x="{x:.1f}" y="{dy:.1f}" width="{w:.1f}" height="{dh:.1f}"/>'
                '<rect class="answered" x="{ax:.1f}" y="{ay:.1f}" width="{aw:.1f}" height="{ah:.1f}"/>'
            ).format(
                x=x + slot * 0.05,
                dy=top + plot_h - dial_h,
                w=slot * 0.9,
                dh=dial_h,
                ax=x + slot * 0.3,
                ay=top + plot_h - answer_h,
                aw=slot * 0.4,
                ah=answer_h,
            )
        )
    parts.append(
        Markup(
            '<text class="tick" x="{l}" y="{y}">{first} UTC</text>'
            '<text class="tick" x="{r}" y="{y}" text-anchor="end">{last}</text></svg>'
        ).format(
            l=left,
            r=left + plot_w,
            y=height - 6,
            first=f"{filled[0][0]:{clock}}",
            last=f"{filled[-1][0]:{clock}}",
        )
    )
    return Markup("").join(parts)


def legend(entries: Sequence[tuple[str, str]]) -> Markup:
    """A text legend: (css class, words) pairs, each with a swatch *and* its words."""
    items = Markup("").join(
        Markup(
            '<li><svg class="swatch" width="14" height="14" aria-hidden="true">'
            '<rect class="{}" width="14" height="14"/></svg> {}</li>'
        ).format(cls, words)
        for cls, words in entries
    )
    return Markup('<ul class="legend">{}</ul>').format(items)
