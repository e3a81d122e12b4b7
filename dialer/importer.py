"""CSV import of contacts, streamed: the file is read row by row and written in
batches, so memory stays bounded whatever the file's size.

The file's encoding and delimiter are detected or given (dialer/csv_records.py);
its columns are matched by header name after one normalisation, with English and
Spanish aliases and the operator's --map (dialer/import_columns.py): first_name,
last_name, phone_number, email and timezone fill those columns; every other column
goes into custom_fields as a string, under its normalised name ("Customer ID" →
custom.customer_id in a script).

Several contacts may share a number (a family at one clinic). A row is an existing
contact when that contact has its number and the same name (first and last, case
and spacing aside), or — a row with no name — when a contact has its number; the
existing contact is reused *unchanged* (the import never overwrites what an operator
or the daemon may have edited since). A row repeating an earlier row of the file
(same number and name; or no name and a number already met) is rejected, naming
the first (docs/operations.md#contact-import).

Every new contact is stored as already checked (number_valid, resolved_timezone,
checked_at): the import has just parsed its number, and the daemon would otherwise
parse every contact again before dialing it — minutes of housekeeping at a million.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import multiprocessing
import os
import uuid
import zoneinfo
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog

from dialer import numbers
from dialer.csv_records import BadRecord, CsvFile
from dialer.database import Connection
from dialer.errors import ImportRejected
from dialer.import_columns import REJECT_COLUMNS, ColumnError, Columns, normalise_header, resolve
from dialer.store.campaigns import CampaignStore
from dialer.store.contacts import ContactImportStore, DoNotCallStore, StagedContact
from dialer.text import printable

__all__ = ["ImportFormat", "ImportResult", "RejectsFile", "import_csv", "import_dnc_csv", "normalise_header"]

log = structlog.get_logger(__name__)

BATCH_SIZE = 5000
# Parsing phone numbers (phonenumbers is pure Python) is ~70 % of an import's CPU: in
# a file this large it is spread over worker processes, which outweighs their
# start-up (~0.5 s) and the pickling of rows; smaller files are parsed in-process.
PARALLEL_MIN_BYTES = 4 * 1024 * 1024
MAX_WORKERS = 4
CHUNK_ROWS = 2000  # rows per unit of work handed to a worker
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
    updated: int = 0  # contacts already in the campaign whose fields there changed

    def summary(self) -> str:
        """The one line the CLI prints at the end."""
        return f"imported {self.new} new, {self.existing} existing, {self.rejected} rejected (see above)"


def _read_header(source: CsvFile, mapping: Mapping[str, str] | None) -> tuple[list[str], Columns]:
    """The header's names as written, and which column is which (import_columns)."""
    where = printable(str(source.path))
    first = next(source.records, None)
    if first is None:
        raise ImportRejected(f"{where}: the file is empty (expected a header line)")
    if isinstance(first, BadRecord):
        raise ImportRejected(f"{where}: line {first.line} (the header): {first.reason}")
    names = first[1]
    try:
        return names, resolve(names, mapping)
    except ColumnError as exc:
        raise ImportRejected(f"{where}: {printable(str(exc))}") from None


def _valid_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _stage_row(header: Columns, row: list[str], line: int, default_region: str | None) -> StagedContact:
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
    header: Columns,
    chunk: list[tuple[int, list[str]] | BadRecord],
    default_region: str | None,
    keep_raw: bool = False,
) -> list[StagedContact | BadRecord]:
    """Validate rows in order (in a worker process, for large files); a record the
    parser already rejected passes through in its place. `keep_raw`: each row keeps
    the file's fields, for a rejects file."""
    staged: list[StagedContact | BadRecord] = []
    for record in chunk:
        if isinstance(record, BadRecord):
            staged.append(record)
            continue
        line, row = record
        try:
            contact = _stage_row(header, row, line, default_region)
        except ValueError as exc:
            staged.append(BadRecord(line, str(exc), tuple(row)))
            continue
        staged.append(dataclasses.replace(contact, raw=tuple(row)) if keep_raw else contact)
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
    source: CsvFile, header: Columns, default_region: str | None, workers: int, keep_raw: bool
) -> AsyncIterator[StagedContact | BadRecord]:
    """Every data row validated, in file order: in-process, or by `workers` worker
    processes with a bounded number of chunks in flight (memory stays bounded, and
    the results are consumed in the order the rows were read)."""
    if workers <= 0:
        for record in source.records:
            for item in _stage_chunk(header, [record], default_region, keep_raw):
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
            in_flight.append(
                loop.run_in_executor(executor, _stage_chunk, header, chunk, default_region, keep_raw)
            )
            chunk = []
            # Two chunks per worker keep every worker busy while we wait on one.
            while len(in_flight) >= 2 * workers:
                for item in await in_flight.popleft():
                    yield item
        if chunk:
            in_flight.append(
                loop.run_in_executor(executor, _stage_chunk, header, chunk, default_region, keep_raw)
            )
        while in_flight:
            for item in await in_flight.popleft():
                yield item
    finally:
        for future in in_flight:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


class RejectsFile:
    """Rejected rows written to a CSV file as the input had them, with two columns
    added (REJECT_COLUMNS: the line and the reason), in UTF-8 with a byte-order mark
    and the input's delimiter. The importer skips those two columns, so the file, once
    corrected, imports as it is. A line the parser could not read holds its raw text
    in the first column."""

    def __init__(self, path: Path, header: Sequence[str], delimiter: str) -> None:
        self.path = path
        try:
            self._file = path.open("w", encoding="utf-8-sig", newline="")
        except OSError as exc:
            where = printable(str(path))
            raise ImportRejected(f"{where}: cannot write the rejects file ({exc.strerror})") from None
        self._width = len(header)
        self._writer = csv.writer(self._file, delimiter=delimiter)
        self._writer.writerow([*header, *REJECT_COLUMNS])
        self.count = 0

    def add(self, line: int, reason: str, fields: Sequence[str]) -> None:
        """One rejected row."""
        cells = list(fields[: self._width]) + [""] * (self._width - len(fields))
        self._writer.writerow([*cells, line, reason])
        self.count += 1

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


@dataclass(frozen=True)
class ImportFormat:
    """How to read a file whose layout is not the default: its encoding and
    delimiter (None: detected, dialer/csv_records.py), and explicit column names
    (--map, import_columns.parse_map)."""

    encoding: str | None = None
    delimiter: str | None = None
    mapping: Mapping[str, str] = dataclasses.field(default_factory=dict)


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
    file_format: ImportFormat | None = None,
    rejects: Path | None = None,
) -> ImportResult:
    """Import contacts from a CSV file in one transaction.

    Rejected rows are passed to `report` as "line N: reason" (control characters
    escaped) and skipped — a line the CSV parser cannot read too — and, with
    `rejects`, written to that file (RejectsFile); a file that cannot be imported at
    all raises ImportRejected and changes nothing. With `campaign_id`, every imported
    or reused contact is also linked into that campaign, the row's other columns
    becoming its fields there (campaign_contacts.fields; a later import replaces
    them, the contact itself stays as it is). Which rows are the same
    contact: docs/operations.md#contact-import. `workers`: processes that parse the
    rows (0: in this process; None: by file size and CPUs); the result and the
    reports are the same either way.
    """
    path = Path(path)
    fmt = file_format or ImportFormat()
    if campaign_id is not None and await CampaignStore(conn).get(campaign_id) is None:
        raise ImportRejected(f"no campaign with id {campaign_id}")
    new = existing = rejected = linked = updated = 0
    store = ContactImportStore(conn)
    report = _escaping(report)
    rejects_file: RejectsFile | None = None
    try:
        with CsvFile(path, encoding=fmt.encoding, delimiter=fmt.delimiter) as source:
            names, header = _read_header(source, fmt.mapping)
            if rejects is not None:
                rejects_file = RejectsFile(rejects, names, source.delimiter)
            # Only custom fields may hold line breaks (an address, a note): a quote left
            # open in a name, number, email or zone is a broken line, not a long field.
            custom = {index for index, _ in header.custom}
            source.allow_line_breaks(custom.__contains__)

            # Rejections are reported when their batch is written, in line order: a
            # duplicate is only known then, and the report reads like the file.
            held: list[tuple[int, str, Sequence[str]]] = []

            def report_held() -> None:
                nonlocal rejected
                for line, reason, fields in sorted(held, key=lambda item: item[0]):
                    rejected += 1
                    report(f"line {line}: {reason}")
                    if rejects_file is not None:
                        rejects_file.add(line, reason, fields)
                held.clear()

            async with conn.transaction():
                await store.begin()
                batch: list[StagedContact] = []

                async def flush() -> None:
                    nonlocal new, existing, linked, updated
                    if batch:
                        result = await store.import_batch(batch, campaign_id)
                        raw = {row.line: row.raw for row in batch} if rejects_file is not None else {}
                        for line, first, unnamed in result.duplicates:
                            what = "phone number" if unnamed else "phone number and name"
                            reason = f"duplicate {what} (same as line {first}), skipped"
                            held.append((line, reason, raw.get(line, ())))
                        new += result.new
                        existing += result.existing
                        linked += result.linked
                        updated += result.updated
                        batch.clear()
                    report_held()
                    if progress is not None:
                        progress(source.consumed, source.total_bytes)

                if workers is None:
                    workers = _auto_workers(source.total_bytes)
                keep_raw = rejects_file is not None
                async for staged in _staged_rows(source, header, default_region, workers, keep_raw):
                    if isinstance(staged, BadRecord):
                        held.append((staged.line, staged.reason, staged.fields))
                        continue
                    batch.append(staged)
                    if len(batch) >= batch_size:
                        await flush()
                await flush()
    except BaseException:
        if rejects_file is not None:
            rejects_file.close()
            rejects_file.path.unlink(missing_ok=True)  # nothing was imported: nothing was rejected
        raise
    if rejects_file is not None:
        rejects_file.close()
    log.debug(
        "contacts_imported",
        file=path.name,
        new=new,
        existing=existing,
        rejected=rejected,
        linked=linked,
        updated=updated,
        campaign_id=str(campaign_id) if campaign_id else None,
    )
    return ImportResult(new=new, existing=existing, rejected=rejected, linked=linked, updated=updated)


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
        _, columns = _read_header(source, None)
        phone_at = columns.positions["phone_number"]
        reason_at = next((index for index, name in columns.custom if name == "reason"), None)
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
