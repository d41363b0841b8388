"""Row validation in worker processes, so a large import uses a second core.

Validating a contact (email-validator, phonenumbers, dates) costs about as much as writing it, and
Python runs one of the two at a time. For a large file the importing process keeps reading the CSV
and writing the database while worker processes validate the batches ahead of it; results come
back in submission order, so rows still apply in file order. Workers are started with `spawn`
(never `fork`: the importer holds database connections and a progress-bar thread), which costs
about half a second, so small files are validated in-process. As with any use of multiprocessing,
a script that imports a large file must keep its top level under `if __name__ == "__main__":`
(the `izin` command is); IZIN_IMPORT_WORKERS=0 turns the workers off.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from izin.consent.csvio import Row

#: files smaller than this are validated in-process (about 40,000 contacts)
PARALLEL_MIN_BYTES = 4 << 20
#: batches submitted ahead of the one being written, per worker
AHEAD_PER_WORKER = 2

#: validates one batch in a worker: (columns, [(line, cells), ...], *args) -> one result per row
ParseBatchFn = Callable[..., list[Any]]


def worker_count() -> int:
    """Workers worth starting here: IZIN_IMPORT_WORKERS if set (0: validate in-process), else the
    cores this process may use, less the importer's own, at most 3 (the writer is the limit then)."""
    if (configured := os.environ.get("IZIN_IMPORT_WORKERS", "").strip()).isdigit():
        return int(configured)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, 3))


def rows_of(columns: list[str], cells: list[tuple[int, list[str]]]) -> list[Row]:
    """Rebuild a batch's rows in a worker (cells travel between processes, not Row objects)."""
    return [Row(line, values, dict(zip(columns, values))) for line, values in cells]


class BatchParser:
    """Validates batches in worker processes, ahead of the caller, handing them back in order."""

    def __init__(self, parse_batch: ParseBatchFn, args: tuple[Any, ...], workers: int) -> None:
        self._parse_batch, self._args = parse_batch, args
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        self._ahead = workers * AHEAD_PER_WORKER
        self._pending: deque[tuple[list[Row], Future[list[Any]]]] = deque()

    def submit(self, columns: list[str], rows: list[Row]) -> Iterator[tuple[list[Row], list[Any]]]:
        """Queue a batch; yield the earliest batches whose results are in, waiting only when too many are ahead."""
        cells = [(row.line, row.cells) for row in rows]
        self._pending.append((rows, self._pool.submit(self._parse_batch, columns, cells, *self._args)))
        while self._pending and (len(self._pending) > self._ahead or self._pending[0][1].done()):
            done_rows, future = self._pending.popleft()
            yield done_rows, future.result()

    def drain(self) -> Iterator[tuple[list[Row], list[Any]]]:
        """Yield every batch still in flight, in order."""
        while self._pending:
            done_rows, future = self._pending.popleft()
            yield done_rows, future.result()

    def close(self) -> None:
        for _rows, future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
