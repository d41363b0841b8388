"""izin.heap: freed heap stays with the process instead of being faulted back in page by page."""

from __future__ import annotations

import subprocess
import sys

import pytest

from izin.heap import keep_heap

# a page of rows made and dropped again and again, as an export does; prints the page faults it took
CHURN = """
import resource, sys
if sys.argv[1] == "kept":
    from izin.heap import keep_heap
    assert keep_heap()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(300):
    page = [bytes(1000) for _ in range(2000)]
    del page
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    return int(subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True,
                              check=True).stdout)


def test_a_kept_heap_takes_a_fraction_of_the_page_faults():
    if not keep_heap():
        pytest.skip("no glibc mallopt here: izin.heap changes nothing on this C library")
    default, kept = faults("default"), faults("kept")
    # 300 pages of 2 MB: glibc gives each back and faults it in again (about 500 faults a page)
    assert default > 50_000
    assert kept < default / 20
