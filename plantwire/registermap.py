"""Vendor register maps from CSV: a machine template's signals as the PLC vendor documents them.

Vendors ship Modbus register maps as spreadsheets; a template may name one instead of listing its
signals (``register_map: maps/compressor_x200.csv`` in the template, path relative to the YAML file
that declares it; ``signals:`` entries, if any, follow the CSV's). One row per signal; a header row
names the columns, in any order; empty cells take the template defaults:

==============  ==========================================================================
column          meaning
==============  ==========================================================================
name            signal name inside the machine (required; ``{j}`` with ``count``)
address         classic Modbus notation, 1-based: 40001+ holding, 30001+ input, 00001+ coil,
                10001+ discrete (5 or 6 digits, e.g. 400001); sets ``table`` and ``offset``
table, offset   instead of ``address``: holding|input|coil|discrete and the 0-based register
                offset inside the machine's block
type            int16 uint16 int32 uint32 int64 float32 float64 bool bit (default float32)
bit             bit index for type ``bit``
byte_order      ABCD CDAB BADC DCBA (default: the device's)
scale, value_offset   engineering value = raw x scale + value_offset
unit, kind, count, low, high, base, amplitude, period_s, noise   as in a YAML signal
==============  ==========================================================================

Lines starting with ``#`` are comments. Every problem is reported as ``FILE:LINE: column: message``
and all of them at once, so a 500-row map is fixed in one pass.

``plantwire discover modbus://...`` writes a skeleton in this format (``format_register_map``): one
row per answering register or bit, named after its address, that imports as is; the engineer renames
rows, merges register pairs into 32-bit types and deletes what is not wanted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "RegisterMapError", "format_register_map", "modbus_address", "read_register_map"]

_INT = {"offset", "bit", "count"}
_FLOAT = {"scale", "value_offset", "low", "high", "base", "amplitude", "period_s", "noise"}
_STR = {"name", "type", "table", "byte_order", "unit", "kind"}
COLUMNS = ("address", *sorted(_STR | _INT | _FLOAT))
_PREFIX_TABLE = {"4": "holding", "3": "input", "0": "coil", "1": "discrete"}
_TABLE_PREFIX = {table: prefix for prefix, table in _PREFIX_TABLE.items()}


class RegisterMapError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


def _address(text: str) -> tuple[str, int]:
    """``40001`` -> ("holding", 0); ``400001`` (6-digit notation) -> ("holding", 0)."""
    if not text.isdigit() or len(text) not in (5, 6):
        raise ValueError(f"{text!r} is not a 5- or 6-digit Modbus address like 40001")
    table = _PREFIX_TABLE.get(text[0])
    if table is None:
        raise ValueError(f"{text!r}: first digit must be 0 (coil), 1 (discrete), 3 (input) or 4 (holding)")
    number = int(text[1:])
    if number < 1:
        raise ValueError(f"{text!r}: register numbers start at 1")
    return table, number - 1


def _row_errors(where: str, sig: dict[str, Any]) -> list[str]:
    """What the plant would refuse in this row (a type typo, a bit out of range), as ``file:line: column``.

    Checked here, where the line is known: the plant would name ``templates.x.signals[7].type``,
    which points at no line of the CSV.
    """
    from pydantic import ValidationError

    from plantwire.plant import SignalTemplate

    try:
        SignalTemplate.model_validate(sig)
    except ValidationError as exc:
        return [f"{where}: {'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}"
                for e in exc.errors(include_url=False)]
    return []


def read_register_map(path: Path) -> list[dict[str, Any]]:
    """Signal dicts (as a YAML template's ``signals`` entries) from a vendor CSV; raises
    :class:`RegisterMapError` with one ``file:line: column: message`` per problem."""
    errors: list[str] = []
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise RegisterMapError([f"{path}: cannot read ({e.strerror or e})"]) from None
    lines = [
        (i + 1, line)
        for i, line in enumerate(text.splitlines())
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise RegisterMapError([f"{path}: empty register map"])
    reader = csv.reader([line for _, line in lines])
    header = [h.strip().lower() for h in next(reader)]
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        errors.append(f"{path}:{lines[0][0]}: unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    if "name" not in header:
        errors.append(f"{path}:{lines[0][0]}: a 'name' column is required")
    if errors:
        raise RegisterMapError(errors)
    for (lineno, _), row in zip(lines[1:], reader, strict=False):
        where = f"{path}:{lineno}"
        if len(row) > len(header):
            errors.append(f"{where}: {len(row)} cells but {len(header)} columns")
            continue
        sig: dict[str, Any] = {}
        for col, cell in zip(header, row, strict=False):
            cell = cell.strip()
            if not cell:
                continue
            try:
                if col == "address":
                    sig["table"], sig["offset"] = _address(cell)
                elif col in _INT:
                    sig[col] = int(cell)
                elif col in _FLOAT:
                    sig[col] = float(cell)
                else:
                    sig[col] = cell
            except ValueError as e:
                errors.append(f"{where}: {col}: {e}")
        filled = {h for h, c in zip(header, row, strict=False) if c.strip()}
        if "address" in filled and filled & {"table", "offset"}:
            errors.append(f"{where}: give either address or table/offset, not both")
        if "name" not in sig:
            errors.append(f"{where}: name: missing")
            continue
        errors += _row_errors(where, sig)
        out.append(sig)
    if errors:
        raise RegisterMapError(errors)
    return out


def modbus_address(table: str, offset: int) -> str:
    """The classic notation of a 0-based ``offset`` in ``table``: ("holding", 0) -> ``40001``; 6 digits
    (``410000``) past register 9,999, as ``address`` cells read them back."""
    number = offset + 1
    if not 1 <= number <= 65536:
        raise ValueError(f"offset {offset} is outside 0..65535")
    return f"{_TABLE_PREFIX[table]}{number:04d}" if number <= 9999 else f"{_TABLE_PREFIX[table]}{number:05d}"


def format_register_map(rows: list[dict[str, Any]], comments: Sequence[str] = ()) -> str:
    """``rows`` (column -> value; columns from COLUMNS) as register-map CSV text, ``comments`` first."""
    columns = [c for c in ("name", "address", "table", "offset", "type", "bit", "byte_order", "scale",
                           "value_offset", "unit", "kind", "count", "low", "high")
               if any(r.get(c) is not None for r in rows)] or ["name", "address", "type"]
    unknown = {k for r in rows for k in r} - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown register map column(s): {', '.join(sorted(unknown))}")
    out = io.StringIO()
    for line in comments:
        out.write(f"# {line}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else r[c] for c in columns])
    return out.getvalue()
