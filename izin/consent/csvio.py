"""CSV input with the contract's promises: UTF-8 (BOM allowed), rows numbered as in the file,
file-level problems as InputError (exit 2), row-level ones to a rejects file with line and reason.
"""

from __future__ import annotations

import codecs
import csv
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from izin.consent.report import ImportReport
from izin.errors import InputError

#: bytes read per step when checking the encoding
_CHUNK = 1 << 20
#: the largest cell we accept; larger ones reject the row rather than exhaust memory
MAX_CELL_CHARS = 64 * 1024
#: a header wider than this is not a contacts file
MAX_COLUMNS = 1_000


@dataclass(frozen=True)
class Row:
    """One data row: its line in the file (the header is line 1), raw cells and cells by column."""

    line: int
    cells: list[str]
    values: dict[str, str]

    def get(self, column: str) -> str | None:
        """The stripped cell, or None when the column is absent or the cell empty."""
        value = self.values.get(column)
        if value is None:
            return None
        value = value.strip()
        return value or None


def _check_encoding(path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    line = 1
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # exc.object is what the decoder saw: the chunk without a leading BOM, or with the
                # bytes of a character split at the previous chunk's end before it (never a newline)
                seen = exc.object
                line += seen[: exc.start].count(b"\n")
                raise InputError(f"is not UTF-8 (byte 0x{seen[exc.start]:02x}); "
                                 "save the file as UTF-8 (Excel: CSV UTF-8) and import again",
                                 file=str(path), line=line) from None
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError("ends in the middle of a UTF-8 character; save the file as UTF-8",
                             file=str(path)) from None


class CsvInput:
    """A validated CSV file to iterate row by row."""

    def __init__(self, path: str | os.PathLike[str], required: tuple[str, ...]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("no such file; check the path", file=str(self.path))
        self.size = self.path.stat().st_size
        _check_encoding(self.path)
        self._file: IO[str] = self.path.open(encoding="utf-8-sig", newline="")
        self._reader = csv.reader(self._file)
        try:
            header = next(self._reader, None)
        except csv.Error as exc:
            self.close()
            raise InputError(f"the header row cannot be read: {exc}", file=str(self.path), line=1) from None
        if not header or not any(c.strip() for c in header):
            self.close()
            raise InputError("is empty; the first line must name the columns, e.g. external_id,email,phone",
                             file=str(self.path), line=1)
        if len(header) > MAX_COLUMNS:
            self.close()
            raise InputError(f"has {len(header)} columns; at most {MAX_COLUMNS} are accepted",
                             file=str(self.path), line=1)
        self.columns = [c.strip() for c in header]
        seen: set[str] = set()
        for column in self.columns:
            # unnamed columns (Excel's trailing commas) may repeat; their cells are ignored
            if column and column in seen:
                self.close()
                raise InputError(f"column {column!r} appears twice in the header; keep one",
                                 file=str(self.path), line=1)
            seen.add(column)
        missing = [c for c in required if c not in seen]
        if missing:
            self.close()
            hint = ""
            if len(self.columns) == 1 and ";" in self.columns[0]:
                hint = " (the columns are separated by ';'; save the file comma-separated, Excel: CSV UTF-8)"
            raise InputError(f"missing required column {missing[0]!r}; the header has: {', '.join(self.columns)}"
                             + hint, file=str(self.path), line=1)
        self.rejected: list[tuple[Row, str]] = []

    @property
    def position(self) -> int:
        """Roughly how many bytes have been read, for progress bars."""
        return self._file.buffer.raw.tell()  # type: ignore[attr-defined]

    def rows(self) -> Iterator[Row]:
        """Yield well-formed rows; malformed ones go straight to the rejects."""
        line = 1
        while True:
            start = line + 1
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                line = self._reader.line_num
                if "field limit" in str(exc):
                    self.reject(Row(start, [], {}), f"row: a cell is longer than {MAX_CELL_CHARS} characters")
                else:
                    self.reject(Row(start, [], {}), f"row: cannot be read as CSV ({exc})")
                continue
            line = self._reader.line_num
            if not cells or not any(c.strip() for c in cells):
                continue  # blank lines are not rows
            row = Row(start, cells, dict(zip(self.columns, cells)))
            if len(cells) != len(self.columns):
                self.reject(row, f"row: has {len(cells)} cells but the header has {len(self.columns)}")
                continue
            if any(len(c) > MAX_CELL_CHARS for c in cells):
                self.reject(row, f"row: a cell is longer than {MAX_CELL_CHARS} characters")
                continue
            if any("\x00" in c for c in cells):
                self.reject(row, "row: contains a NUL character")
                continue
            yield row

    def reject(self, row: Row, reason: str) -> None:
        self.rejected.append((row, reason))

    def rejects_path(self, target: str | os.PathLike[str] | None) -> Path:
        """Where the rejects go: `target`, else FILE.rejects.csv in the working directory."""
        return Path(target) if target else Path(self.path.stem + ".rejects.csv")

    def check_rejects_target(self, target: str | os.PathLike[str] | None) -> None:
        """Refuse, before importing anything, a rejects file that could not be written."""
        path = self.rejects_path(target)
        folder = path.parent  # Path("x").parent is Path(".")
        if path.is_dir():
            raise InputError("is a folder; give a file name for the rejects", file=str(path), field="--rejects")
        if not folder.is_dir():
            raise InputError(f"folder {str(folder)!r} does not exist; create it or choose another rejects file",
                             file=str(path), field="--rejects")
        if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise InputError("cannot be written; choose another rejects file", file=str(path), field="--rejects")

    def reason_counts(self) -> dict[str, int]:
        """Rejected rows per column (a reason's text before its first ':')."""
        counts: dict[str, int] = {}
        for _row, reason in self.rejected:
            key = reason.split(":", 1)[0]
            counts[key] = counts.get(key, 0) + 1
        return counts

    def write_rejects(self, target: str | os.PathLike[str] | None) -> Path | None:
        """Write rejected rows (original columns + line + reason), in file order; default ./FILE.rejects.csv."""
        if not self.rejected:
            return None
        path = self.rejects_path(target)
        try:
            with path.open("w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                writer.writerow([*self.columns, "line", "reason"])
                for row, reason in sorted(self.rejected, key=lambda item: item[0].line):
                    cells = (row.cells + [""] * len(self.columns))[: len(self.columns)]
                    writer.writerow([*cells, row.line, reason])
        except OSError as exc:
            raise InputError(f"cannot be written ({exc.strerror}); the valid rows were imported, "
                             f"{len(self.rejected)} rows were rejected", file=str(path), field="--rejects") from None
        return path

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def batched(rows: Iterator[Row], size: int) -> Iterator[list[Row]]:
    """Group rows into lists of at most `size`."""
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


ProgressFn = Callable[[int], None]
#: handles one batch of rows: rejects bad ones on the input, counts outcomes on the report
BatchFn = Callable[["CsvInput", list[Row], ImportReport], None]
#: runs after the last batch, before the counts are taken (a pipelined import finishes its batches)
FinishFn = Callable[["CsvInput", ImportReport], None]


def import_csv(path: str | os.PathLike[str], required: tuple[str, ...], rejects: str | None,
               progress: ProgressFn | None, handle: BatchFn, batch_rows: int = 1_000,
               finish: FinishFn | None = None) -> ImportReport:
    """The frame every import shares: open and check the file, feed batches, write the rejects."""
    report = ImportReport(file=str(path))
    with CsvInput(path, required=required) as source:
        source.check_rejects_target(rejects)
        for rows in batched(source.rows(), batch_rows):
            handle(source, rows, report)
            if progress:
                progress(source.position)
        if finish:
            finish(source, report)
        report.rejected = len(source.rejected)
        report.reasons = source.reason_counts()
        report.rejects_file = source.write_rejects(rejects)
    return report
