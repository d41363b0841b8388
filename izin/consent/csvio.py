"""CSV input with the contract's promises: UTF-8 (BOM allowed), rows numbered as in the file,
file-level problems as InputError (exit 2), row-level ones to a rejects file with line and reason.
Every CSV izin writes goes through `neutralise`, so no cell runs as a spreadsheet formula.
"""

from __future__ import annotations

import codecs
import csv
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from izin.consent.report import ImportReport
from izin.errors import InputError

#: bytes read per step when checking the encoding
_CHUNK = 1 << 20
#: the largest cell we accept; larger ones reject the row rather than exhaust memory
MAX_CELL_CHARS = 64 * 1024
#: a header wider than this is not a contacts file
MAX_COLUMNS = 1_000
#: the longest cell the csv module will read at all, in characters. Cells up to it are read whole,
#: so a long quoted cell is rejected as one row instead of its lines being read as rows of their
#: own; a longer one stops the import (it is almost always a quote never closed)
FIELD_LIMIT = 8 * 1024 * 1024
csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))  # process-wide: only ever raised
#: what a spreadsheet (Excel, LibreOffice, Google Sheets) takes as the start of a formula
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def neutralise(value: Any) -> str:
    """A CSV cell a spreadsheet will show as text, never run as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


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
        if f.read(2) in _UTF16_BOMS:
            raise InputError("is UTF-16 (Excel: Unicode Text); save the file as UTF-8 (Excel: CSV UTF-8) "
                             "and import again", file=str(path), line=1)
        f.seek(0)
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


class _Lines:
    """The file's lines for csv.reader, keeping those of the record being read, so a record that
    swallowed the rest of the file (a quote never closed) can be rejected and the lines after its
    first one read again. Line numbers count what was read, the header being line 1."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._again: deque[str] = deque()
        self.taken: list[str] = []
        #: lines belonging to records already returned
        self.done = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._again.popleft() if self._again else next(self._lines)
        self.taken.append(line)
        return line

    def exhausted(self) -> bool:
        if self._again:
            return False
        line = next(self._lines, None)
        if line is None:
            return True
        self._again.append(line)
        return False

    def finish_record(self) -> None:
        self.done += len(self.taken)
        self.taken = []

    def read_again_after_first(self) -> None:
        """Keep the current record's first line as consumed; the others will be read again."""
        rest, self.taken = self.taken[1:], self.taken[:1]
        self._again.extendleft(reversed(rest))
        self.finish_record()


def _unterminated(lines: list[str]) -> bool:
    """Whether these lines end inside a quoted cell (the lenient reader silently closes it at EOF)."""
    try:
        for _ in csv.reader(lines, strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


class CsvInput:
    """A validated CSV file to iterate row by row."""

    def __init__(self, path: str | os.PathLike[str], required: tuple[str, ...]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("no such file; check the path", file=str(self.path))
        self.size = self.path.stat().st_size
        _check_encoding(self.path)
        self._file: IO[str] = self.path.open(encoding="utf-8-sig", newline="")
        self._lines = _Lines(self._file)
        self._reader = csv.reader(self._lines)
        try:
            header = next(self._reader, None)
            self._lines.finish_record()
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
        #: set when reading had to stop before the end of the file (exit 2 once the rows before are done)
        self.stopped: InputError | None = None

    @property
    def position(self) -> int:
        """Roughly how many bytes have been read, for progress bars."""
        return self._file.buffer.raw.tell()  # type: ignore[attr-defined]

    def rows(self) -> Iterator[Row]:
        """Yield well-formed rows; malformed ones go straight to the rejects."""
        lines = self._lines
        while True:
            start = lines.done + 1
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                lines.finish_record()
                if "field limit" in str(exc):
                    # where this cell ends cannot be known, so no row after it can be trusted: stop
                    # here, and let the caller finish the rows before it and then report this
                    self.stopped = InputError(f"a cell starting on this line is longer than {FIELD_LIMIT} "
                                              "characters (a quote never closed?); nothing after it was read, "
                                              "the rows before it were imported", file=str(self.path), line=start)
                    return
                self.reject(Row(start, [], {}), f"row: cannot be read as CSV ({exc})")
                continue
            if len(lines.taken) > 1 and lines.exhausted() and _unterminated(lines.taken):
                # the lines after this one are rows of their own, not the inside of a cell
                first = next(csv.reader(lines.taken[:1]), [])
                lines.read_again_after_first()
                self.reject(Row(start, first, dict(zip(self.columns, first))),
                            'row: a quote (") opened in this row is never closed; close it or remove it')
                continue
            lines.finish_record()
            if not cells or not any(c.strip() for c in cells):
                continue  # blank lines are not rows
            row = Row(start, cells, dict(zip(self.columns, cells)))
            if len(cells) != len(self.columns):
                self.reject(row, f"row: has {len(cells)} cells but the header has {len(self.columns)}")
                continue
            if any(len(c) > MAX_CELL_CHARS for c in cells):
                # the rejects name the row; the oversized cell itself is left out of them
                kept = [c if len(c) <= MAX_CELL_CHARS else "" for c in cells]
                self.reject(Row(start, kept, dict(zip(self.columns, kept))),
                            f"row: a cell is longer than {MAX_CELL_CHARS} characters")
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
                    writer.writerow([neutralise(c) for c in (*cells, row.line, reason)])
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


#: characters one batch may hold: wide rows (many long attribute cells) make smaller batches, so
#: memory follows this budget and not the file's size
BATCH_CHARS = 8 * 1024 * 1024


def batched(rows: Iterator[Row], size: int, max_chars: int = BATCH_CHARS) -> Iterator[list[Row]]:
    """Group rows into lists of at most `size` rows and about `max_chars` characters."""
    batch: list[Row] = []
    chars = 0
    for row in rows:
        batch.append(row)
        chars += sum(map(len, row.cells))
        if len(batch) == size or chars >= max_chars:
            yield batch
            batch, chars = [], 0
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
    if source.stopped is not None:
        raise source.stopped
    return report
