"""Imports that take what people export: semicolons, Windows-1252/Latin-1, a BOM,
Spanish and English header aliases, --map, contacts sharing one number, --rejects
and the exit status — through the real CLI on a real database."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import asyncpg
import pytest

from dialer.csv_records import detect_delimiter, detect_encoding
from dialer.import_columns import ColumnError, parse_map, resolve
from tests.cli_helpers import Cli, cli  # noqa: F401 - the fixture

CLINIC = (
    "Nombre;Apellidos;Teléfono;Email;Cita\r\n"
    "Ana;García Núñez;612 345 678;ana@example.es;lunes 9 de marzo, 10:00\r\n"
    "Luis;García Núñez;612 345 678;;martes 10 de marzo, 12:30\r\n"
    "Begoña;Peña;622 000 111;bego@example.es;miércoles 11 de marzo, 9:15\r\n"
)


async def _contacts(conn: asyncpg.Connection) -> list[tuple[object, ...]]:
    rows = await conn.fetch(
        "SELECT first_name, last_name, phone_number, email, custom_fields FROM contacts ORDER BY first_name"
    )
    return [tuple(r) for r in rows]


EXPECTED = [
    ("Ana", "García Núñez", "+34612345678", "ana@example.es", {"cita": "lunes 9 de marzo, 10:00"}),
    ("Begoña", "Peña", "+34622000111", "bego@example.es", {"cita": "miércoles 11 de marzo, 9:15"}),
    ("Luis", "García Núñez", "+34612345678", None, {"cita": "martes 10 de marzo, 12:30"}),
]


@pytest.mark.parametrize(
    "encoding", ["utf-8-sig", "cp1252", "latin-1"], ids=["utf8-bom", "windows-1252", "latin-1"]
)
async def test_the_clinic_export_imports_unedited(
    cli: Cli, conn: asyncpg.Connection, tmp_path: Path, encoding: str
) -> None:
    """The clinic's `;`-separated export (BOM or Windows-1252 or Latin-1, Spanish headers,
    national numbers) imports as it is, family members sharing a number as contacts of their own."""
    path = tmp_path / "pacientes.csv"
    path.write_bytes(CLINIC.encode(encoding))
    code, out, err = await cli("contacts", "import", str(path), "--default-region", "ES")
    assert (code, err) == (0, "")
    assert out.splitlines() == ["imported 3 new, 0 existing, 0 rejected (see above)"]
    assert await _contacts(conn) == EXPECTED
    code, out, _ = await cli("contacts", "import", str(path), "--default-region", "ES")
    assert (code, out.splitlines()) == (0, ["imported 0 new, 3 existing, 0 rejected (see above)"])


async def test_explicit_delimiter_encoding_and_map(
    cli: Cli, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """--delimiter, --encoding and --map read a file no detection or alias would."""
    path = tmp_path / "odd.txt"
    path.write_bytes("Paciente|Contacto|Móvil\nJosé|x|+34 612 000 001\n".encode("latin-1"))
    code, out, err = await cli(
        "contacts", "import", str(path), "--delimiter", "|", "--encoding", "latin-1",
        "--map", "Paciente=first_name", "--map", "contacto=ignore",
    )  # fmt: skip
    assert (code, err) == (0, ""), out
    assert await _contacts(conn) == [("José", None, "+34612000001", None, {})]


async def test_two_phone_columns_need_a_map(cli: Cli, conn: asyncpg.Connection, tmp_path: Path) -> None:
    """Teléfono and Móvil both mean phone_number: refused naming both, until --map chooses one
    (the other is kept as a custom field)."""
    path = tmp_path / "two.csv"
    path.write_text("Nombre,Teléfono,Móvil\nAna,911 234 567,612 345 678\n")
    code, _, err = await cli("contacts", "import", str(path), "--default-region", "ES")
    assert code == 1
    assert "columns 'Teléfono' and 'Móvil' both mean phone_number" in err
    code, _, err = await cli(
        "contacts", "import", str(path), "--default-region", "ES", "--map", "Móvil=phone_number"
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert await _contacts(conn) == [("Ana", None, "+34612345678", None, {"telefono": "911 234 567"})]


async def test_same_number_same_name_is_one_contact(
    cli: Cli, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """In one file: the same number and name twice is a duplicate; a row with no name after its
    number appeared is a duplicate too (nothing tells it apart); another name is another contact."""
    path = tmp_path / "f.csv"
    path.write_text(
        "phone,first_name,last_name\n"
        "+34612345678,Ana,García\n"  # 2
        "+34612345678,ANA , garcía\n"  # 3 same as 2
        "+34612345678,Luis,García\n"  # 4 another member of the family
        "+34612345678,,\n"  # 5 no name, number already met
    )
    code, out, _ = await cli("contacts", "import", str(path))
    assert code == 3
    assert out.splitlines() == [
        "line 3: duplicate phone number and name (same as line 2), skipped",
        "line 5: duplicate phone number (same as line 2), skipped",
        "imported 2 new, 0 existing, 2 rejected (see above)",
    ]


async def test_unnamed_row_reuses_the_contact_with_its_number(
    cli: Cli, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A file with numbers only links the contacts already holding them (the oldest), creating none."""
    first = tmp_path / "named.csv"
    first.write_text("phone,first_name\n+34612345678,Ana\n")
    await cli("contacts", "import", str(first))
    first.write_text("phone,first_name\n+34612345678,Luis\n")  # a later import: a younger contact
    await cli("contacts", "import", str(first))
    cid = await conn.fetchval("INSERT INTO campaigns (name) VALUES ('c') RETURNING id")
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("phone\n+34612345678\n")
    code, out, _ = await cli("contacts", "import", str(numbers), "--campaign", str(cid))
    assert code == 0 and out.splitlines()[0] == "imported 0 new, 1 existing, 0 rejected (see above)"
    linked = await conn.fetchval(
        "SELECT ct.first_name FROM campaign_contacts cc JOIN contacts ct ON ct.id = cc.contact_id "
        "WHERE cc.campaign_id = $1",
        cid,
    )
    assert linked == "Ana"


async def test_rejects_file_holds_the_rows_and_reimports_once_fixed(
    cli: Cli, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """--rejects writes each rejected row as the file had it plus its line and reason (exit 3);
    the corrected rejects file imports as it is (its two extra columns are skipped)."""
    path = tmp_path / "in.csv"
    path.write_text(
        'Nombre;Teléfono;Cita\nAna;612 345 678;lunes\nBob;12;martes\n"Eva;612 000 002;x\nCarmen;612 000 003;jueves\n'
    )
    rejects = tmp_path / "rejects.csv"
    code, out, err = await cli(
        "contacts", "import", str(path), "--default-region", "ES", "--rejects", str(rejects)
    )  # fmt: skip
    assert (code, err) == (3, "")
    assert out.splitlines()[-1] == f"rejected rows written to {rejects}"
    with rejects.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    assert rows[0] == ["Nombre", "Teléfono", "Cita", "reject_line", "reject_reason"]
    assert rows[1] == ["Bob", "12", "martes", "3", "'12' is not a valid number for its country"]
    assert rows[2][0] == '"Eva;612 000 002;x' and rows[2][3] == "4"
    assert "unterminated quote" in rows[2][4]
    # The operator corrects the two rows in a spreadsheet, leaving the added columns.
    rows[1][1] = "612 000 004"
    rows[2][:3] = ["Eva", "612 000 002", "x"]
    with rejects.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f, delimiter=";").writerows(rows)
    code, out, err = await cli("contacts", "import", str(rejects), "--default-region", "ES")
    assert (code, err) == (0, ""), out
    assert out.splitlines() == ["imported 2 new, 0 existing, 0 rejected (see above)"]
    assert await conn.fetchval("SELECT custom_fields FROM contacts WHERE first_name = 'Bob'") == {
        "cita": "martes"
    }


async def test_campaign_add_contacts_takes_the_same_options(
    cli: Cli, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """`campaign add-contacts --csv` reads the clinic export with the same detection and options."""
    cid = await conn.fetchval("INSERT INTO campaigns (name) VALUES ('Recordatorios') RETURNING id")
    path = tmp_path / "p.csv"
    path.write_bytes(CLINIC.encode("cp1252"))
    code, out, _ = await cli(
        "campaign", "add-contacts", "Recordatorios", "--csv", str(path), "--default-region", "ES"
    )
    assert code == 0
    assert out.splitlines()[-1] == f"linked 3 contacts into campaign {cid}"
    assert isinstance(cid, uuid.UUID)


def test_detection() -> None:
    """UTF-8 (with or without BOM, or cut mid-character by the sample) vs Windows-1252 vs Latin-1;
    the delimiter a header uses outside quotes."""
    assert detect_encoding("Teléfono".encode(), complete=True) == "utf-8-sig"
    assert detect_encoding("Teléfono".encode()[:5], complete=False) == "utf-8-sig"
    assert detect_encoding("Teléfono “x”".encode("cp1252"), complete=True) == "cp1252"
    assert detect_encoding(b"caf\xe9 \x81", complete=True) == "latin-1"
    assert detect_delimiter("Nombre;Apellidos;Teléfono") == ";"
    assert detect_delimiter('"a,b";c;d') == ";"
    assert detect_delimiter("a\tb\tc") == "\t"
    assert detect_delimiter("phone_number") == ","


def test_columns_and_map() -> None:
    """Aliases in English and Spanish, --map overriding them, and the header errors."""
    columns = resolve(["Nombre", "Apellidos", "Móvil", "Correo", "Cita"])
    assert columns.positions == {"first_name": 0, "last_name": 1, "phone_number": 2, "email": 3}
    assert columns.custom == [(4, "cita")]
    mapped = resolve(["Tel", "Nombre"], parse_map(["nombre=Paciente"]))
    assert mapped.positions == {"phone_number": 0} and mapped.custom == [(1, "paciente")]
    with pytest.raises(ColumnError, match="names a column the header does not have"):
        resolve(["phone"], parse_map(["Teléfono=phone_number"]))
    with pytest.raises(ColumnError, match="write HEADER=COLUMN"):
        parse_map(["Teléfono"])
