"""A campaign's results as CSV: the `campaign_results` view written out row by row,
for `dialer campaign export` and the console's download alike (one format, one
place; docs/campaigns.md#results).

Plain CSV: `,`, times in UTC (ISO 8601 with Z). Excel flavour: `;`, a UTF-8
byte-order mark, local wall times in the campaign's zone, and text a spreadsheet
would run as a formula shown as text.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zoneinfo
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Final

from dialer.models import Campaign
from dialer.store.results import ResultsStore

# A text cell a spreadsheet would take for a formula (=, @, +, - and the control
# characters some read as a cell break), unless it is just a signed number or phone
# number: such a cell gets a leading apostrophe in the Excel flavour, so a name like
# "=HYPERLINK(…)" from an imported file is shown, never evaluated.
_FORMULA: Final = re.compile(r"^[=@+\-\t\r]")
_SIGNED_NUMBER: Final = re.compile(r"^[+\-][\d\s().]*$")
CHUNK_ROWS: Final = 500  # rows per chunk handed to the writer (bounded memory)


def cell(value: Any, zone: zoneinfo.ZoneInfo | None, excel: bool) -> str:
    """One value as CSV text: times in UTC (ISO 8601, Z), or local wall time in `zone`."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        # Naive UTC in the database.
        if zone is None:
            return value.strftime("%Y-%m-%dT%H:%M:%SZ")
        return value.replace(tzinfo=UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
    text = json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, dict) else str(value)
    if excel and _FORMULA.match(text) and not _SIGNED_NUMBER.match(text):
        return "'" + text
    return text


async def result_chunks(
    store: ResultsStore, campaign: Campaign, *, excel: bool, default_timezone: str
) -> AsyncIterator[tuple[str, int]]:
    """The campaign's results as CSV text, in chunks: (text, rows in it). The header
    (and the byte-order mark of the Excel flavour) come first, with 0 rows."""
    columns = await store.result_columns()
    zone = zoneinfo.ZoneInfo(campaign.timezone or default_timezone) if excel else None
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";" if excel else ",", lineterminator="\r\n")
    if excel:
        buffer.write("\ufeff")
    writer.writerow(columns)
    rows = 0
    async for row in store.results(campaign.id):
        writer.writerow([cell(row[c], zone, excel) for c in columns])
        rows += 1
        if rows == CHUNK_ROWS:
            yield buffer.getvalue(), rows
            buffer.seek(0)
            buffer.truncate()
            rows = 0
    yield buffer.getvalue(), rows
