"""CSV import of contacts against a real PostgreSQL: validation, reporting, dedupe,
campaign linking and batching."""

from __future__ import annotations

import tracemalloc
import uuid
from pathlib import Path

import asyncpg
import pytest

from dialer.errors import ImportRejected
from dialer.importer import ImportFormat, ImportResult, import_csv, normalise_header
from dialer.store.lifecycle import LifecycleStore

GOOD = (
    "first_name,last_name,phone_number,email,timezone,Customer ID\n"
    "Ana,García,+34 911 234 567,ana@example.com,Europe/Madrid,C-1\n"
    "Bob,Smith,+1 212 555 0100,,,C-2\n"
)


def _write(tmp_path: Path, text: str, name: str = "contacts.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


async def _import(conn: asyncpg.Connection, path: Path, **kwargs: object) -> tuple[ImportResult, list[str]]:
    lines: list[str] = []
    result = await import_csv(conn, path, report=lines.append, **kwargs)  # type: ignore[arg-type]
    return result, lines


async def _contacts(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT first_name, last_name, phone_number, email, timezone, custom_fields FROM contacts ORDER BY phone_number"
    )


async def test_good_rows_are_imported_with_every_field(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """Known columns fill their fields, numbers become E.164, other columns become string custom fields."""
    result, lines = await _import(conn, _write(tmp_path, GOOD))
    assert (result.new, result.existing, result.rejected, lines) == (2, 0, 0, [])
    rows = [dict(r) for r in await _contacts(conn)]
    assert rows == [
        {
            "first_name": "Bob",
            "last_name": "Smith",
            "phone_number": "+12125550100",
            "email": None,
            "timezone": None,
            "custom_fields": {"customer_id": "C-2"},
        },
        {
            "first_name": "Ana",
            "last_name": "García",
            "phone_number": "+34911234567",
            "email": "ana@example.com",
            "timezone": "Europe/Madrid",
            "custom_fields": {"customer_id": "C-1"},
        },
    ]


async def test_bad_rows_are_reported_with_line_numbers_and_skipped(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """Invalid numbers, unknown zones and a duplicate are each reported as 'line N: reason'; the rest import."""
    text = (
        "phone_number,timezone,email\n"  # line 1
        "+34911234567,,\n"  # 2 ok
        "12345,,\n"  # 3 no country code
        "+34 1,,\n"  # 4 too short
        "+34911234568,Mars/Olympus,\n"  # 5 bad zone
        "\n"  # 6 blank: ignored
        "+34 911 234 567,,\n"  # 7 duplicate of 2
        "+34911234569,,nobody\n"  # 8 bad email
        "+34911234570,UTC,a@b.c\n"  # 9 ok
    )
    result, lines = await _import(conn, _write(tmp_path, text))
    assert lines == [
        "line 3: '12345' has no country code (write +<country> or pass --default-region)",
        "line 4: '+34 1' is not a phone number (too short)",
        "line 5: unknown IANA time zone 'Mars/Olympus'",
        "line 7: duplicate phone number (same as line 2), skipped",
        "line 8: email 'nobody' has no @",
    ]
    assert (result.new, result.existing, result.rejected) == (2, 0, 5)
    assert result.summary() == "imported 2 new, 0 existing, 5 rejected (see above)"
    assert [r["phone_number"] for r in await _contacts(conn)] == ["+34911234567", "+34911234570"]


async def test_default_region_applies_to_national_numbers(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """With a default region, numbers written without a country code are accepted."""
    result, lines = await _import(conn, _write(tmp_path, "phone_number\n911 234 567\n"), default_region="ES")
    assert (result.new, lines) == (1, [])
    assert [r["phone_number"] for r in await _contacts(conn)] == ["+34911234567"]


async def test_missing_phone_column_is_a_file_error(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """A file without a phone number column (by any alias) is refused whole, naming the file and the columns found."""
    path = _write(tmp_path, "Name,Fax\nAna,+34911234567\n")
    with pytest.raises(ImportRejected) as caught:
        await _import(conn, path)
    assert str(caught.value).startswith(f"{path}: no phone number column (found: name, fax); name it phone_number")
    assert await _contacts(conn) == []


async def test_bom_header_quotes_and_spacing(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """A UTF-8 BOM, header names in other case/spacing and quoted commas and newlines all read correctly."""
    text = ' First Name ,PHONE NUMBER,Notes\n"Ana, María","+34911234567","says ""hi"",\nthen bye"\n'
    path = _write(tmp_path, text, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    result, lines = await _import(conn, path)
    assert (result.new, lines) == (1, [])
    row = (await _contacts(conn))[0]
    assert row["first_name"] == "Ana, María"
    assert row["custom_fields"] == {"notes": 'says "hi",\nthen bye'}


async def test_line_numbers_count_physical_lines(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """A quoted field spanning lines shifts later line numbers as an editor shows them."""
    text = 'phone_number,notes\n+34911234567,"two\nlines"\nbad,\n'
    _, lines = await _import(conn, _write(tmp_path, text))
    assert lines == ["line 4: 'bad' has no country code (write +<country> or pass --default-region)"]


async def test_reimport_creates_no_duplicates_and_keeps_existing_fields(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Importing again reuses contacts by number and name (any case and spacing), unchanged,
    and counts them as existing."""
    await _import(conn, _write(tmp_path, GOOD))
    before = await conn.fetch("SELECT * FROM contacts ORDER BY id")
    changed = GOOD.replace("Ana,García,+34 911 234 567,ana@", " ANA , garcía ,+34 911 234 567,other@")
    result, lines = await _import(conn, _write(tmp_path, changed, name="again.csv"))
    assert (result.new, result.existing, result.rejected, lines) == (0, 2, 0, [])
    assert await conn.fetch("SELECT * FROM contacts ORDER BY id") == before


async def test_campaign_links_new_and_existing_contacts(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """--campaign links every imported or reused contact once; linking again adds nothing."""
    await _import(conn, _write(tmp_path, "phone_number,first_name,last_name\n+34911234567,Ana,García\n", name="first.csv"))
    campaign_id = await conn.fetchval("INSERT INTO campaigns (name) VALUES ('c') RETURNING id")
    result, _ = await _import(conn, _write(tmp_path, GOOD), campaign_id=campaign_id)
    assert (result.new, result.existing, result.linked) == (1, 1, 2)
    result, _ = await _import(conn, _write(tmp_path, GOOD), campaign_id=campaign_id)
    assert (result.new, result.existing, result.linked) == (0, 2, 0)
    linked = await conn.fetch(
        "SELECT c.phone_number, cc.call_status FROM campaign_contacts cc JOIN contacts c ON c.id = cc.contact_id "
        "WHERE cc.campaign_id = $1 ORDER BY 1",
        campaign_id,
    )
    assert [tuple(r) for r in linked] == [("+12125550100", "pending"), ("+34911234567", "pending")]


async def test_unknown_campaign_is_refused(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """Linking to a campaign that does not exist is a file-level error, and nothing is imported."""
    with pytest.raises(ImportRejected, match="no campaign with id"):
        await _import(conn, _write(tmp_path, GOOD), campaign_id=uuid.uuid4())
    assert await _contacts(conn) == []


async def test_duplicates_across_batches_are_found(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """A number repeated far apart (in different batches) is still reported with both line numbers."""
    rows = [f"+3491123{i:04d}" for i in range(25)] + ["+34911230003"]
    path = _write(tmp_path, "phone_number\n" + "\n".join(rows) + "\n")
    result, lines = await _import(conn, path, batch_size=10)
    assert lines == ["line 27: duplicate phone number (same as line 5), skipped"]
    assert (result.new, result.rejected) == (25, 1)
    assert await conn.fetchval("SELECT count(DISTINCT phone_number) FROM contacts") == 25


async def test_wrong_explicit_encoding_is_a_file_error(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """A Latin-1 file read as UTF-8 (--encoding utf-8) is refused with a hint instead of importing mangled names."""
    path = _write(tmp_path, "first_name,phone_number\nJosé,+34911234567\n", encoding="latin-1")
    with pytest.raises(ImportRejected, match=r"not utf-8 text .*--encoding"):
        await _import(conn, path, file_format=ImportFormat(encoding="utf-8"))
    assert await _contacts(conn) == []


async def test_large_file_streams_in_bounded_memory(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """20,000 rows import in batches, with progress reported, while Python's peak allocation stays far below the file's size."""
    path = tmp_path / "big.csv"
    with path.open("w") as f:
        f.write("first_name,phone_number,segment\n")
        for i in range(20_000):
            f.write(f"name{i},+3461{i:07d},seg{i % 7}\n")
    seen: list[tuple[int, int]] = []
    tracemalloc.start()
    try:
        result = await import_csv(conn, path, report=print, progress=lambda d, t: seen.append((d, t)), batch_size=2000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (result.new, result.rejected) == (20_000, 0)
    assert len(seen) >= 10 and seen[-1][0] == seen[-1][1] == path.stat().st_size
    # One batch of 2,000 staged rows costs about a MB; the whole file as objects would be ~10x that.
    assert peak < 5 * 1024 * 1024, peak


async def test_imported_contacts_are_checked_so_the_daemon_need_not_parse_them_again(
    conn: asyncpg.Connection, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """The importer records what it parsed: valid, checked now, resolved zone = own valid zone, else the one the
    number implies (none when it implies several). The daemon's check then finds nothing to do, and would have
    resolved the same; a contact reused by a re-import is left as it was (unchecked here)."""
    await conn.execute("INSERT INTO contacts (phone_number) VALUES ('+442079460958')")  # by hand: unchecked
    text = (
        "phone_number,timezone\n"
        "+34 911 234 567,\n"  # Madrid
        "+34 911 234 568,Atlantic/Canary\n"  # an explicit valid zone wins
        "+1 212 555 0100,\n"  # New York
        "+34 612 345 678,\n"  # a Spanish mobile: mainland or Canaries, so no zone
        "+44 20 7946 0958,\n"  # already a contact: reused unchanged
    )
    result, lines = await _import(conn, _write(tmp_path, text))
    assert (result.new, result.existing, lines) == (4, 1, [])
    query = (
        "SELECT phone_number, number_valid, resolved_timezone, "
        "checked_at IS NOT NULL AND abs(extract(epoch FROM timezone('utc', now()) - checked_at)) < 60 AS just_now "
        "FROM contacts ORDER BY phone_number"
    )
    imported = [tuple(r) for r in await conn.fetch(query)]
    assert imported == [
        ("+12125550100", True, "America/New_York", True),
        ("+34612345678", True, None, True),
        ("+34911234567", True, "Europe/Madrid", True),
        ("+34911234568", True, "Atlantic/Canary", True),
        ("+442079460958", None, None, False),
    ]
    store = LifecycleStore(pool, instance_id=uuid.uuid4(), validate_template=lambda _template: None)
    assert await store.check_contacts() == 1  # only the contact written by hand
    # Forget the importer's work: the daemon's own check resolves every contact the same way.
    await conn.execute("UPDATE contacts SET checked_at = NULL, number_valid = NULL, resolved_timezone = NULL")
    assert await store.check_contacts() == 5
    assert [r[:3] for r in await conn.fetch(query)] == [r[:3] for r in imported[:4]] + [
        ("+442079460958", True, "Europe/London")
    ]


async def test_worker_processes_give_the_same_result_and_reports(db_url: str, tmp_path: Path) -> None:
    """Rows parsed by worker processes (as for large files) import and report exactly as in-process parsing."""
    rows = ["phone_number,timezone,notes"]
    for i in range(5000):
        rows.append(f"+34 91 123 {i:04d},{'Mars/Olympus' if i % 700 == 5 else ''},n{i}")
        if i % 997 == 3:
            rows.append(f"+34 91 123 {i - 1:04d},,dup")  # duplicate, maybe across batches
        if i % 1300 == 7:
            rows.append("12345,,bad")
    path = _write(tmp_path, "\n".join(rows) + "\n")
    outcomes = []
    for workers in (0, 2):
        conn = await asyncpg.connect(db_url)
        try:
            async with conn.transaction():
                lines: list[str] = []
                result = await import_csv(conn, path, report=lines.append, batch_size=700, workers=workers)
                stored = await conn.fetch("SELECT phone_number, timezone, custom_fields::text FROM contacts ORDER BY 1")
                outcomes.append((result, lines, [tuple(r) for r in stored]))
                raise _Undo
        except _Undo:
            pass
        finally:
            await conn.close()
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0].new == 5000 - 8 and len(outcomes[0][1]) == outcomes[0][0].rejected > 0


class _Undo(Exception):
    """Rolls the first import back so the second starts from the same empty tables."""


def test_header_normalisation() -> None:
    """Header names match regardless of case, outer spaces, inner spaces or hyphens."""
    assert normalise_header("  Phone-Number ") == "phone_number"
    assert normalise_header("First   Name") == "first_name"
