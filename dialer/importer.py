"""CSV import of contacts, streamed: the file is read row by row and written in
batches, so memory stays bounded whatever the file's size.

Columns are matched by header name, ignoring case, surrounding spaces and the
difference between spaces, hyphens and underscores ("Phone Number" is phone_number).
first_name, last_name, phone_number, email and timezone fill those columns; every
other column goes into custom_fields as a string, under its normalised name
("Customer ID" → custom.customer_id in a script).

Dedupe is by E.164 number: a number that already belongs to a contact reuses that
contact *unchanged* (the import never overwrites what an operator or the daemon may
have edited since), and a number repeated inside the file is rejected on its second
line, naming the first.

Every new contact is stored as already checked (number_valid, resolved_timezone,
checked_at): the import has just parsed its number, and the daemon would otherwise
parse every contact again before dialing it — minutes of housekeeping at a million.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import uuid
import zoneinfo
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog

from dialer import numbers
from dialer.csv_records import BadRecord, CsvFile
from dialer.database import Connection
from dialer.errors import ImportRejected
from dialer.store.campaigns import CampaignStore
from dialer.store.contacts import ContactImportStore, DoNotCallStore, StagedContact
from dialer.text import printable
from dialer.twiml import field_key

log = structlog.get_logger(__name__)

BATCH_SIZE = 5000
# Parsing phone numbers (phonenumbers is pure Python) is ~70 % of an import's CPU: in
# a file this large it is spread over worker processes, which outweighs their
# start-up (~0.5 s) and the pickling of rows; smaller files are parsed in-process.
PARALLEL_MIN_BYTES = 4 * 1024 * 1024
MAX_WORKERS = 4
CHUNK_ROWS = 2000  # rows per unit of work handed to a worker
STANDARD_COLUMNS = ("first_name", "last_name", "phone_number", "email", "timezone")
# Column widths of the contacts table: longer values would fail the whole batch.
MAX_LENGTHS = {"first_name": 100, "last_name": 100, "email": 255}

Reporter = Callable[[str], None]
ProgressCallback = Callable[[int, int], None]  # (bytes read, total bytes)


@dataclass(frozen=True)
class ImportResult:
    """Totals of one import."""

    new: int
    existing: int
    rejected: int
    linked: int

    def summary(self) -> str:
        """The one line the CLI prints at the end."""
        return f"imported {self.new} new, {self.existing} existing, {self.rejected} rejected (see above)"


def normalise_header(name: str) -> str:
    """'  Phone-Number ' → 'phone_number': the one normalisation placeholders use too
    (twiml.field_key), so `{{custom.Cita}}` finds the column headed "CITA"."""
    return field_key(name)


@dataclass(frozen=True)
class _Header:
    """Where each known column is, and which columns are custom fields."""

    positions: dict[str, int]
    custom: list[tuple[int, str]]
    width: int


def _header_names(source: CsvFile) -> dict[str, int]:
    """The header's normalised names and their positions; the file must have a
    phone_number column, and no empty or repeated names."""
    where = printable(str(source.path))
    first = next(source.records, None)
    if first is None:
        raise ImportRejected(f"{where}: the file is empty (expected a header line)")
    if isinstance(first, BadRecord):
        raise ImportRejected(f"{where}: line {first.line} (the header): {first.reason}")
    names = [normalise_header(n) for n in first[1]]
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if not name:
            raise ImportRejected(f"{where}: column {index + 1} of the header has no name")
        if name in seen:
            raise ImportRejected(f"{where}: column {name!r} appears twice in the header")
        seen[name] = index
    if "phone_number" not in seen:
        found = printable(", ".join(names))
        raise ImportRejected(f"{where}: no phone_number column (found: {found})")
    return seen


def _read_header(source: CsvFile) -> _Header:
    seen = _header_names(source)
    positions = {name: seen[name] for name in STANDARD_COLUMNS if name in seen}
    custom = [(i, n) for n, i in seen.items() if n not in STANDARD_COLUMNS]
    return _Header(positions=positions, custom=custom, width=len(seen))


def _valid_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _stage_row(header: _Header, row: list[str], line: int, default_region: str | None) -> StagedContact:
    """Validate one data row; raises ValueError with the reason it is rejected."""
    if len(row) > header.width:
        raise ValueError(f"has {len(row)} fields but the header has {header.width}")
    row = row + [""] * (header.width - len(row))

    def value(column: str) -> str | None:
        index = header.positions.get(column)
        text = row[index].strip() if index is not None else ""
        return text or None

    try:
        parsed = numbers.parse(row[header.positions["phone_number"]], default_region)
    except numbers.InvalidNumber as exc:
        raise ValueError(str(exc)) from None
    fields = {column: value(column) for column in ("first_name", "last_name", "email", "timezone")}
    for column, limit in MAX_LENGTHS.items():
        text = fields[column]
        if text is not None and len(text) > limit:
            raise ValueError(f"{column} is longer than {limit} characters")
    email = fields["email"]
    if email is not None and "@" not in email:
        raise ValueError(f"email {email!r} has no @")
    zone = fields["timezone"]
    if zone is not None and not _valid_zone(zone):
        raise ValueError(f"unknown IANA time zone {zone!r}")
    return StagedContact(
        line=line,
        phone_number=parsed.e164,
        first_name=fields["first_name"],
        last_name=fields["last_name"],
        email=email,
        timezone=zone,
        custom_fields={name: row[index] for index, name in header.custom},
        implied_timezone=parsed.implied_timezone,
    )


def _stage_chunk(
    header: _Header, chunk: list[tuple[int, list[str]] | BadRecord], default_region: str | None
) -> list[StagedContact | BadRecord]:
    """Validate rows in order (in a worker process, for large files); a record the
    parser already rejected passes through in its place."""
    staged: list[StagedContact | BadRecord] = []
    for record in chunk:
        if isinstance(record, BadRecord):
            staged.append(record)
            continue
        line, row = record
        try:
            staged.append(_stage_row(header, row, line, default_region))
        except ValueError as exc:
            staged.append(BadRecord(line, str(exc)))
    return staged


def _escaping(report: Reporter) -> Reporter:
    """`report`, with what a terminal would act on escaped in every message (the
    messages quote the file's data)."""
    return lambda message: report(printable(message))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _auto_workers(total_bytes: int) -> int:
    cpus = _usable_cpus()
    if total_bytes < PARALLEL_MIN_BYTES or cpus < 2:
        return 0
    return min(MAX_WORKERS, cpus)


async def _staged_rows(
    source: CsvFile, header: _Header, default_region: str | None, workers: int
) -> AsyncIterator[StagedContact | BadRecord]:
    """Every data row validated, in file order: in-process, or by `workers` worker
    processes with a bounded number of chunks in flight (memory stays bounded, and
    the results are consumed in the order the rows were read)."""
    if workers <= 0:
        for record in source.records:
            for item in _stage_chunk(header, [record], default_region):
                yield item
        return
    loop = asyncio.get_running_loop()
    # spawn: a clean child, whatever threads or event loop this process runs.
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    in_flight: deque[asyncio.Future[list[StagedContact | BadRecord]]] = deque()
    try:
        chunk: list[tuple[int, list[str]] | BadRecord] = []
        for record in source.records:
            chunk.append(record)
            if len(chunk) < CHUNK_ROWS:
                continue
            in_flight.append(loop.run_in_executor(executor, _stage_chunk, header, chunk, default_region))
            chunk = []
            # Two chunks per worker keep every worker busy while we wait on one.
            while len(in_flight) >= 2 * workers:
                for item in await in_flight.popleft():
                    yield item
        if chunk:
            in_flight.append(loop.run_in_executor(executor, _stage_chunk, header, chunk, default_region))
        while in_flight:
            for item in await in_flight.popleft():
                yield item
    finally:
        for future in in_flight:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


async def import_csv(
    conn: Connection,
    path: str | Path,
    *,
    campaign_id: uuid.UUID | None = None,
    default_region: str | None = None,
    report: Reporter,
    progress: ProgressCallback | None = None,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
) -> ImportResult:
    """Import contacts from a CSV file in one transaction.

    Rejected rows are passed to `report` as "line N: reason" (control characters
    escaped) and skipped — a line the CSV parser cannot read too; a file that
    cannot be imported at all raises ImportRejected and changes nothing. With
    `campaign_id`, every imported or reused contact is also linked into that campaign.
    `workers`: processes that parse the rows (0: in this process; None: by file
    size and CPUs); the result and the reports are the same either way.
    """
    path = Path(path)
    if campaign_id is not None and await CampaignStore(conn).get(campaign_id) is None:
        raise ImportRejected(f"no campaign with id {campaign_id}")
    new = existing = rejected = linked = 0
    store = ContactImportStore(conn)
    report = _escaping(report)
    with CsvFile(path) as source:
        header = _read_header(source)
        # Only custom fields may hold line breaks (an address, a note): a quote left
        # open in a name, number, email or zone is a broken line, not a long field.
        custom = {index for index, _ in header.custom}
        source.allow_line_breaks(custom.__contains__)
        async with conn.transaction():
            await store.begin()
            batch: dict[str, StagedContact] = {}

            async def flush() -> None:
                nonlocal new, existing, rejected, linked
                if batch:
                    result = await store.import_batch(list(batch.values()), campaign_id)
                    for line, first in result.duplicates:
                        report(f"line {line}: duplicate phone number (same as line {first}), skipped")
                    rejected += len(result.duplicates)
                    new += result.new
                    existing += result.existing
                    linked += result.linked
                    batch.clear()
                if progress is not None:
                    progress(source.consumed, source.total_bytes)

            if workers is None:
                workers = _auto_workers(source.total_bytes)
            async for staged in _staged_rows(source, header, default_region, workers):
                if isinstance(staged, BadRecord):
                    report(f"line {staged.line}: {staged.reason}")
                    rejected += 1
                    continue
                first = batch.get(staged.phone_number)
                if first is not None:
                    report(f"line {staged.line}: duplicate phone number (same as line {first.line}), skipped")
                    rejected += 1
                    continue
                batch[staged.phone_number] = staged
                if len(batch) >= batch_size:
                    await flush()
            await flush()
    log.debug(
        "contacts_imported",
        file=path.name,
        new=new,
        existing=existing,
        rejected=rejected,
        linked=linked,
        campaign_id=str(campaign_id) if campaign_id else None,
    )
    return ImportResult(new=new, existing=existing, rejected=rejected, linked=linked)


@dataclass(frozen=True)
class DncImportResult:
    """Totals of one do-not-call import."""

    added: int
    already_listed: int
    rejected: int

    def summary(self) -> str:
        """The one line the CLI prints at the end."""
        return (
            f"added {self.added} new, {self.already_listed} already listed, "
            f"{self.rejected} rejected (see above)"
        )


async def import_dnc_csv(
    conn: Connection,
    path: str | Path,
    *,
    default_region: str | None = None,
    reason: str | None = None,
    report: Reporter,
    batch_size: int = BATCH_SIZE,
) -> DncImportResult:
    """Add the numbers of a CSV file (a phone_number column, optionally a reason
    column, else `reason`) to the do-not-call list, in one transaction."""
    path = Path(path)
    store = DoNotCallStore(conn)
    added = accepted = rejected = 0
    report = _escaping(report)
    with CsvFile(path) as source:
        columns = _header_names(source)
        phone_at, reason_at = columns["phone_number"], columns.get("reason")
        source.allow_line_breaks(lambda index: index != phone_at)
        async with conn.transaction():
            batch: list[tuple[str, str | None]] = []
            for record in source.records:
                if isinstance(record, BadRecord):
                    report(f"line {record.line}: {record.reason}")
                    rejected += 1
                    continue
                line, row = record
                try:
                    number = numbers.parse(row[phone_at] if phone_at < len(row) else "", default_region)
                except numbers.InvalidNumber as exc:
                    report(f"line {line}: {exc}")
                    rejected += 1
                    continue
                own = row[reason_at].strip() if reason_at is not None and reason_at < len(row) else ""
                batch.append((number.e164, own or reason))
                accepted += 1
                if len(batch) >= batch_size:
                    added += await store.add_many(batch)
                    batch.clear()
            if batch:
                added += await store.add_many(batch)
    log.debug("dnc_imported", file=path.name, added=added, rejected=rejected)
    return DncImportResult(added=added, already_listed=accepted - added, rejected=rejected)
