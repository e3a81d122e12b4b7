"""A broken line of a CSV file is that line's problem alone: a NUL byte, a quote left
open, text after a closing quote each reject their line, with its number, and every
other row is imported; what the file holds is escaped in every message."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from dialer import csv_records
from dialer.errors import ImportRejected
from dialer.importer import ImportResult, import_csv, import_dnc_csv
from tests.cli_helpers import Cli, cli  # noqa: F401 - the fixture


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_bytes(text.encode("utf-8"))
    return path


async def _import(conn: asyncpg.Connection, path: Path) -> tuple[ImportResult, list[str]]:
    lines: list[str] = []
    result = await import_csv(conn, path, report=lines.append)
    return result, lines


async def _names(conn: asyncpg.Connection) -> dict[str, str | None]:
    rows = await conn.fetch("SELECT phone_number, first_name FROM contacts")
    return {r["phone_number"]: r["first_name"] for r in rows}


async def test_a_nul_byte_rejects_its_line_only(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """A NUL byte (which PostgreSQL cannot store: the whole import used to fail at
    the database, naming no line) rejects its line; the others are imported."""
    path = _write(tmp_path, "phone_number,first_name\n+34911000001,Ana\n+34911000002,B\x00b\n+34911000003,Eva\n")
    result, lines = await _import(conn, path)
    assert lines == ["line 3: contains a NUL byte"]
    assert (result.new, result.rejected) == (2, 1)
    assert await _names(conn) == {"+34911000001": "Ana", "+34911000003": "Eva"}


async def test_an_unterminated_quote_in_a_name_rejects_its_line_only(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """A quote opened in a name and never closed used to swallow the next rows into
    that name, silently; now its line is rejected and the next rows are rows."""
    path = _write(
        tmp_path,
        'phone_number,first_name,notes\n+34911000001,"Bob,x\n+34911000002,Alice,y\n+34911000003,Carol,"z"\n',
    )
    result, lines = await _import(conn, path)
    assert lines == ["line 2: a quoted field is not closed on its line (unterminated quote)"]
    assert await _names(conn) == {"+34911000002": "Alice", "+34911000003": "Carol"}
    assert result.rejected == 1


async def test_an_unterminated_quote_in_a_custom_field_at_the_end_of_the_file(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A custom field may span lines, but one whose quote the file never closes
    rejects its first line, and the lines it would have swallowed are rows again."""
    path = _write(tmp_path, 'phone_number,notes\n+34911000001,"open\n+34911000002,fine\n+34911000003,also\n')
    result, lines = await _import(conn, path)
    assert lines == ["line 2: malformed CSV: the file ends inside a quoted field (unterminated quote)"]
    assert set(await _names(conn)) == {"+34911000002", "+34911000003"}
    assert result.rejected == 1


async def test_multi_line_custom_fields_still_import(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """A properly quoted custom field with line breaks is one value, and the line
    numbers after it still count physical lines."""
    path = _write(
        tmp_path,
        'phone_number,notes\n+34911000001,"first\nsecond ""quoted"", third"\n+34911000002,x\nbad,y\n',
    )
    result, lines = await _import(conn, path)
    assert result.new == 2
    assert lines == ["line 5: 'bad' has no country code (write +<country> or pass --default-region)"]
    notes = await conn.fetchval("SELECT custom_fields->>'notes' FROM contacts WHERE phone_number = '+34911000001'")
    assert notes == 'first\nsecond "quoted", third'


async def test_a_field_open_past_the_limit_rejects_its_line(
    conn: asyncpg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A custom field may span at most MAX_RECORD_LINES lines: past that its quote
    counts as unterminated and memory stays bounded."""
    monkeypatch.setattr(csv_records, "MAX_RECORD_LINES", 3)
    rows = "".join(f"+3491100000{i},row {i}\n" for i in range(2, 7))
    path = _write(tmp_path, f'phone_number,notes\n+34911000001,"open\n{rows}')
    result, lines = await _import(conn, path)
    assert lines == ["line 2: a quoted field is not closed within 3 lines (unterminated quote)"]
    assert result.new == 5


async def test_text_after_a_closing_quote_rejects_its_line(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """`"Bob"x` is malformed quoting: its line is rejected instead of importing a
    mangled value."""
    path = _write(tmp_path, 'phone_number,first_name\n+34911000001,"Bob"x\n+34911000002,Eva\n')
    _, lines = await _import(conn, path)
    assert lines == ["line 2: malformed CSV: ',' expected after '\"'"]
    assert await _names(conn) == {"+34911000002": "Eva"}


async def test_control_characters_from_the_file_are_escaped_in_every_message(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Escape sequences, bidirectional overrides and line breaks from the file reach
    the operator's terminal as visible escapes, never as themselves."""
    path = _write(
        tmp_path,
        "phone_number,email,timezone\n"
        "+34911000001,\x1b[2J\x1b]0;pwned\x07,\n"
        "\x1b[31m+3491\u202e,,\n"
        "+34911000003,,Europe/\x1b[5mMadrid\n",
    )
    _, lines = await _import(conn, path)
    assert len(lines) == 3
    text = "\n".join(lines)
    assert not any(ch in text for ch in "\x1b\x07\u202e")
    assert "\\x1b[2J" in text and "\\u202e" in text


async def test_a_header_with_control_characters_is_reported_escaped(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """A file-level error quoting the header escapes it too."""
    path = _write(tmp_path, "name\x1b[8m,fax\n")
    with pytest.raises(ImportRejected) as info:
        await _import(conn, path)
    assert "\x1b" not in str(info.value) and "\\x1b[8m" in str(info.value)


async def test_an_unterminated_quote_in_the_header_is_a_file_error(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """Without a readable header nothing can be imported: one line naming line 1."""
    path = _write(tmp_path, 'phone_number,"first_name\n+34911000001,Ana\n')
    with pytest.raises(ImportRejected, match="line 1 \\(the header\\): a quoted field is not closed"):
        await _import(conn, path)


async def test_dnc_import_rejects_broken_lines_only(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """The do-not-call import reads files the same way: a NUL or an open quote
    rejects its line; the reason column may hold line breaks."""
    path = _write(
        tmp_path,
        'phone_number,reason\n+34911000001,"asked\ntwice"\n+3491\x00,x\n"+34911000003,y\n+34911000004,z\n',
    )
    lines: list[str] = []
    result = await import_dnc_csv(conn, path, report=lines.append)
    assert lines == ["line 4: contains a NUL byte", "line 5: a quoted field is not closed on its line (unterminated quote)"]
    assert result.added == 2
    listed = {r["phone_number"]: r["reason"] for r in await conn.fetch("SELECT phone_number, reason FROM do_not_call")}
    assert listed == {"+34911000001": "asked\ntwice", "+34911000004": "z"}


async def test_the_cli_prints_every_message_escaped(cli: Cli, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """`dialer contacts import` as an operator runs it: the broken lines are reported
    with their numbers, the rest imported, and no control character from the file
    reaches the terminal."""
    path = _write(
        tmp_path,
        "phone_number,first_name,email\n+34911000001,Ana,\x1b]0;owned\x07\n+34911000002,B\x00b,\n+34911000003,\x1b[31mEva,\n",
    )
    code, out, err = await cli("contacts", "import", str(path))
    assert code == 3, err  # rows were rejected
    assert "line 2: email '\\x1b]0;owned\\x07' has no @" in out
    assert "line 3: contains a NUL byte" in out
    assert "imported 1 new, 0 existing, 2 rejected" in out
    assert not any(ch in out + err for ch in "\x1b\x07\x00")
    assert await conn.fetchval("SELECT first_name FROM contacts") == "\x1b[31mEva"
