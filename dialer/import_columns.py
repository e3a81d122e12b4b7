"""Which column of a CSV file is which: the header's names after the one
normalisation (`normalise_header`, shared with `{{custom.KEY}}`), aliases in English
and Spanish for the standard columns, and the operator's explicit `--map`.

Every header name is normalised first (accents dropped, case folded, runs of spaces,
hyphens and underscores made one '_': `Teléfono` → `telefono`, `Phone Number` →
`phone_number`), then looked up in ALIASES. `--map HEADER=COLUMN` overrides the
aliases for that header; COLUMN is a standard column, or any other name to keep
the column as that custom field (`--map "Fecha cita=cita"`), or `ignore`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dialer.twiml import field_key

STANDARD_COLUMNS = ("first_name", "last_name", "phone_number", "email", "timezone")
# Columns a rejects file adds (dialer/importer.py): skipped when that file, fixed, is imported again.
REJECT_COLUMNS = ("reject_line", "reject_reason")
IGNORE = "ignore"

# Normalised header → standard column. What spreadsheets and clinic, CRM and phone
# exports call them, in English and Spanish.
ALIASES: Mapping[str, str] = {
    **dict.fromkeys(
        (
            "phone_number", "phone", "phone_no", "telephone", "telephone_number", "tel", "mobile",
            "mobile_phone", "mobile_number", "cell", "cell_phone", "cellphone", "number",
            "telefono", "telefono_movil", "numero_de_telefono", "num_telefono", "movil", "celular",
        ),
        "phone_number",
    ),
    **dict.fromkeys(
        ("first_name", "firstname", "first", "given_name", "forename", "name", "nombre", "nombre_de_pila"),
        "first_name",
    ),
    **dict.fromkeys(
        ("last_name", "lastname", "last", "surname", "family_name", "apellidos", "apellido", "apellido1"),
        "last_name",
    ),
    **dict.fromkeys(
        ("email", "e_mail", "mail", "email_address", "correo", "correo_electronico", "correo_e"),
        "email",
    ),
    **dict.fromkeys(("timezone", "time_zone", "tz", "zona_horaria", "huso_horario"), "timezone"),
}  # fmt: skip


def normalise_header(name: str) -> str:
    """'  Teléfono Móvil ' → 'telefono_movil': the one normalisation of a field's name,
    twiml.field_key, so `{{custom.Cita}}` finds the column headed "CITA"."""
    return field_key(name)


class ColumnError(ValueError):
    """The header cannot be read as contacts (the message says why, in the file's terms)."""


def parse_map(items: Sequence[str]) -> dict[str, str]:
    """`--map HEADER=COLUMN` arguments → {normalised header: column, custom key or IGNORE}."""
    mapping: dict[str, str] = {}
    for item in items:
        header, sep, column = item.partition("=")
        if not sep or not header.strip() or not column.strip():
            raise ColumnError(f"--map {item!r}: write HEADER=COLUMN, e.g. --map 'Teléfono=phone_number'")
        # A standard column, `ignore`, or any other name: that custom field.
        mapping[normalise_header(header)] = normalise_header(column)
    return mapping


@dataclass(frozen=True)
class Columns:
    """Where each standard column is, which columns are custom fields (by position,
    under their normalised name), and the header's width."""

    positions: dict[str, int]
    custom: list[tuple[int, str]]
    width: int


def resolve(names: Sequence[str], mapping: Mapping[str, str] | None = None) -> Columns:
    """The columns of a header (its names as written). Raises ColumnError for an
    empty or repeated name, two columns meaning the same standard column (`Teléfono`
    and `Móvil`: choose with --map), a --map naming no column, or no phone number."""
    mapping = mapping or {}
    normalised = [normalise_header(n) for n in names]
    seen: dict[str, int] = {}
    for index, name in enumerate(normalised):
        if not name:
            raise ColumnError(f"column {index + 1} of the header has no name")
        if name in seen:
            raise ColumnError(f"column {names[index]!r} appears twice in the header")
        seen[name] = index
    for header in mapping:
        if header not in seen:
            raise ColumnError(f"--map names a column the header does not have: {header!r}")
    positions: dict[str, int] = {}
    custom: list[tuple[int, str]] = []
    chosen = {target for target in mapping.values() if target in STANDARD_COLUMNS}
    for index, name in enumerate(normalised):
        target = mapping[name] if name in mapping else ALIASES.get(name, name)
        if name not in mapping and target in chosen:
            target = name  # --map gave this standard column to another header: keep this one as custom
        if target == IGNORE or name in REJECT_COLUMNS:
            continue
        if target not in STANDARD_COLUMNS:
            custom.append((index, target))
            continue
        if target in positions:
            first = names[positions[target]]
            raise ColumnError(
                f"columns {first!r} and {names[index]!r} both mean {target}: choose one with "
                f"--map '{names[index]}={target}' (the other is then kept as a custom field)"
            )
        positions[target] = index
    if "phone_number" not in positions:
        raise ColumnError(
            f"no phone number column (found: {', '.join(normalised)}); name it phone_number, "
            "phone, mobile, teléfono or móvil, or pass --map 'HEADER=phone_number'"
        )
    return Columns(positions=positions, custom=custom, width=len(names))
