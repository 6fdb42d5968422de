"""Reading the raw formats task files come in: zip members, CSV rows and FASTA records.

Every reader names the file (and the zip member) in its errors; rows are numbered from 1
for the first data row (the header is not counted), so "row 5" is line 6 of the file.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ptransfer.tasks.base import TaskDataError
from ptransfer.tasks.validate import require_columns


def read_zip_member(path: Path, member: str) -> str:
    """The text of ``member`` inside zip ``path``; errors name the archive and member."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if member not in names:
                listed = ", ".join(n for n in names if not n.endswith("/"))
                raise TaskDataError(f"{path}: no member {member!r} in the archive; it holds "
                                    f"{listed}")
            raw = archive.read(member)
    except zipfile.BadZipFile as err:
        raise TaskDataError(f"{path}: not a readable zip archive ({err}); delete it and "
                            "download it again") from None
    return decode_text(raw, f"{path}:{member}")


def decode_text(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TaskDataError(f"{source}: not UTF-8 text ({err})") from None


def read_text_file(path: Path) -> str:
    return decode_text(path.read_bytes(), str(path))


def csv_rows(text: str, source: str, required: list[str]) -> Iterator[tuple[int, dict]]:
    """(row number, row) for every data row of CSV ``text``, header names stripped.

    Raises TaskDataError when a column name is repeated, a required column is missing or a
    row has too many or too few fields.
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise TaskDataError(f"{source}: empty file (no header line)")
    header = [name.strip() for name in header]
    repeated = [name for name in dict.fromkeys(header) if header.count(name) > 1]
    if repeated:  # dict(zip(...)) below would silently keep the last of them
        raise TaskDataError(f"{source}: column {repeated[0]!r} appears "
                            f"{header.count(repeated[0])} times in the header; rename or "
                            f"drop the extra one(s)")
    require_columns(header, required, source)
    for number, fields in enumerate(reader, start=1):
        if not fields:  # blank line
            continue
        if len(fields) != len(header):
            raise TaskDataError(f"{source} row {number}: {len(fields)} fields, the header "
                                f"has {len(header)}")
        yield number, dict(zip(header, fields))


@dataclass
class FastaRecord:
    id: str  # first word of the header line
    header: str  # the header line without '>'
    sequence: str


def parse_fasta(text: str, source: str) -> dict[str, FastaRecord]:
    """FASTA records keyed by id, in file order; multi-line records are joined.

    Raises TaskDataError on text before the first header, an empty id, or a repeated id.
    """
    records: dict[str, FastaRecord] = {}
    current: FastaRecord | None = None
    chunks: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line.startswith(">"):
            if current is not None:
                current.sequence = "".join(chunks)
            header = line[1:].strip()
            record_id = header.split()[0] if header else ""
            if not record_id:
                raise TaskDataError(f"{source} line {number}: FASTA header without an id")
            if record_id in records:
                raise TaskDataError(f"{source} record {record_id}: id appears twice")
            current, chunks = FastaRecord(record_id, header, ""), []
            records[record_id] = current
        elif line:
            if current is None:
                raise TaskDataError(f"{source} line {number}: text before the first '>' header")
            chunks.append(line)
    if current is not None:
        current.sequence = "".join(chunks)
    return records
