"""A CSV file read as records with their line numbers, where one bad line is one
rejected record and never more: the parsing layer under the importer.

The csv module alone merges lines greedily: a quote opened and never closed swallows
the following rows into one field (silently, or up to the end of the file), and a
NUL byte, which PostgreSQL cannot store, would only fail the whole import at the
database. Here the csv reader is fed one physical line at a time, and a record may
take another line only while a quote opened in a column that may hold line breaks
(not a name, number, email or zone) is still open, for at most MAX_RECORD_LINES
lines. A record that cannot be completed is reported on its first line, and the
lines after it are read again as records of their own.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dialer.errors import ImportRejected
from dialer.text import printable

MAX_RECORD_LINES = 100  # physical lines one record (a quoted multi-line field) may span

SpanRule = Callable[[int], bool]  # may the field at this 0-based position span lines?


@dataclass(frozen=True)
class BadRecord:
    """A record that cannot be parsed (or a row the importer rejects): its first line,
    why (printable text), and what it held — the parsed fields, or the raw text of a
    line the parser could not read — for a rejects file."""

    line: int
    reason: str
    fields: tuple[str, ...] = ()


# Encodings a spreadsheet export is in, tried in this order when none is given: UTF-8
# (a byte-order mark or not), else Windows-1252 — Excel's "CSV" on Western Windows,
# which is Latin-1 plus curly quotes and the euro sign in 0x80-0x9F — else Latin-1,
# which decodes any byte (cp1252 leaves five bytes undefined).
SNIFF_BYTES = 1 << 20
DELIMITERS = (",", ";", "\t", "|")


def detect_encoding(sample: bytes, *, complete: bool) -> str:
    """The encoding of a file that begins with `sample` (`complete`: the whole file)."""
    if sample.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        sample.decode("utf-8")
        return "utf-8-sig"
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the end of the sample is still UTF-8.
        if not complete and exc.start >= len(sample) - 3 and exc.reason == "unexpected end of data":
            return "utf-8-sig"
    try:
        sample.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def detect_delimiter(header: str) -> str:
    """The delimiter of a CSV header line: the most frequent of , ; tab | outside
    quotes (a comma on a tie or when there is none: a one-column file)."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > counts[","] else ","


class _CountingReader(io.RawIOBase):
    """A raw binary stream that counts the bytes read, to drive a progress bar by
    position (a text stream cannot tell() while a csv reader iterates it)."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.consumed += n
        return n


class _Cut(Exception):
    """Raised into the csv reader to end a record it may not extend."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_field(text: str, delimiter: str, quote: str) -> int | None:
    """The position of the field a record's text ends inside of an open quote, or
    None when it ends outside quotes (the csv module's own states, for the excel
    dialect's doubled quotes; only run on records that span lines)."""
    field, quoted, after_quote, at_start = 0, False, False, True
    for ch in text:
        if quoted:
            if ch == quote:
                quoted, after_quote = False, True
            continue
        if after_quote and ch == quote:  # a doubled quote inside a quoted field
            quoted, after_quote = True, False
            continue
        after_quote = False
        if ch == delimiter:
            field, at_start = field + 1, True
        elif at_start and ch == quote:
            quoted, at_start = True, False
        elif ch not in "\r\n":
            at_start = False
    return field if quoted else None


class _LineFeed:
    """The file's physical lines, handed to the csv reader one at a time; lines
    pushed back are handed out again first. It refuses (raises _Cut) a line the
    current record may not take."""

    def __init__(self, text: IO[str], delimiter: str, quote: str) -> None:
        self._text = text
        self._delimiter, self._quote = delimiter, quote
        self._pushed: deque[tuple[int, str]] = deque()
        self.lines_read = 0  # physical lines read from the file
        self.record: list[tuple[int, str]] = []  # (line number, text) taken by the current record
        self.may_span: SpanRule = lambda _position: False

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if self.record:
            # The reader wants more: the record's last line ended inside a quote.
            text = "".join(t for _, t in self.record)
            position = open_field(text, self._delimiter, self._quote)
            if position is None or not self.may_span(position):
                raise _Cut("a quoted field is not closed on its line (unterminated quote)")
            if len(self.record) >= MAX_RECORD_LINES:
                raise _Cut(
                    f"a quoted field is not closed within {MAX_RECORD_LINES} lines (unterminated quote)"
                )
        number, line = self._next_line()
        if "\x00" in line:
            if self.record:
                self._pushed.appendleft((number, line))
                raise _Cut("a quoted field is not closed before a line with a NUL byte")
            self.record.append((number, line))
            raise _Cut("contains a NUL byte")
        self.record.append((number, line))
        return line

    def _next_line(self) -> tuple[int, str]:
        if self._pushed:
            return self._pushed.popleft()
        line = self._text.readline()
        if not line:
            raise StopIteration
        self.lines_read += 1
        return self.lines_read, line

    def start(self) -> None:
        """A new record begins."""
        self.record = []

    def give_back_all_but_first(self) -> None:
        """The current record failed: its lines after the first are read again."""
        self._pushed.extendleft(reversed(self.record[1:]))
        self.record = self.record[:1]


class CsvFile:
    """A CSV file opened for streaming: text in the given encoding or the one
    detected (detect_encoding; a byte-order mark, which spreadsheets write, is
    dropped), split on the given delimiter or the one its header uses
    (detect_delimiter), records with their first line number, and the bytes consumed
    so far."""

    def __init__(self, path: Path, *, encoding: str | None = None, delimiter: str | None = None) -> None:
        self.path = path
        try:
            raw = path.open("rb")
            self.total_bytes = path.stat().st_size
            sample = raw.read(SNIFF_BYTES)
            raw.seek(0)
        except OSError as exc:
            raise ImportRejected(f"{printable(str(path))}: cannot open ({exc.strerror})") from None
        self.encoding = encoding or detect_encoding(sample, complete=len(sample) < SNIFF_BYTES)
        if self.encoding.replace("_", "-").lower() in ("utf-8", "utf8"):
            self.encoding = "utf-8-sig"  # a byte-order mark is never part of the first header
        self._counter = _CountingReader(raw)
        # newline="": line ends stay in the text, as the csv module needs them.
        self._text = io.TextIOWrapper(io.BufferedReader(self._counter), encoding=self.encoding, newline="")
        if delimiter is None:
            first_line = sample.split(b"\n", 1)[0].decode(self.encoding, errors="replace")
            delimiter = detect_delimiter(first_line)
        self.delimiter = delimiter
        dialect = csv.get_dialect("excel")
        self._feed = _LineFeed(self._text, delimiter, dialect.quotechar or '"')
        # strict: a quote left open at the end, or text after a closing quote, is an
        # error for that record instead of a silently merged or mangled field.
        self._reader = csv.reader(self._feed, dialect, delimiter=delimiter, strict=True)
        # Every record in file order, (first line number, fields) or a BadRecord;
        # blank records are skipped. One iterator: the header is its first item.
        self.records: Iterator[tuple[int, list[str]] | BadRecord] = self._records()

    @property
    def consumed(self) -> int:
        """Bytes read from the file so far (ahead of the parser by one buffer)."""
        return self._counter.consumed

    def allow_line_breaks(self, rule: SpanRule) -> None:
        """Which fields (by position) may hold line breaks inside quotes; none until
        this is called (the header)."""
        self._feed.may_span = rule

    def _records(self) -> Iterator[tuple[int, list[str]] | BadRecord]:
        while True:
            self._feed.start()
            try:
                fields = next(self._reader)
            except StopIteration:
                return
            except _Cut as cut:
                yield self._bad(cut.reason)
                continue
            except csv.Error as exc:
                reason = str(exc)
                if reason == "unexpected end of data":
                    reason = "the file ends inside a quoted field (unterminated quote)"
                yield self._bad(f"malformed CSV: {reason}")
                continue
            except UnicodeDecodeError:
                where = printable(str(self.path))
                # Decoded a block at a time: the bad byte is somewhere after the lines read.
                encoding = "utf-8" if self.encoding == "utf-8-sig" else self.encoding
                after = f" after line {self._feed.lines_read}" if self._feed.lines_read else ""
                raise ImportRejected(
                    f"{where}: not {encoding} text{after} "
                    "(give the file's encoding with --encoding, e.g. cp1252 or latin-1)"
                ) from None
            if any(cell.strip() for cell in fields):
                yield self._feed.record[0][0], fields

    def _bad(self, reason: str) -> BadRecord:
        first = self._feed.record[0][0] if self._feed.record else self._feed.lines_read
        text = self._feed.record[0][1] if self._feed.record else ""
        self._feed.give_back_all_but_first()
        # The raw line (without its line end or NUL bytes) stands for the fields it lost.
        return BadRecord(first, reason, (text.rstrip("\r\n").replace("\x00", ""),))

    def close(self) -> None:
        """Close the file."""
        self._text.close()

    def __enter__(self) -> CsvFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
