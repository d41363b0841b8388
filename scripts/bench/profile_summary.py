"""Where a worker's time goes: py-spy's raw (collapsed) stacks summed per function.

    python scripts/bench/profile_summary.py py-spy.txt [--top 30]

Each line of py-spy's raw format is `frame;frame;...;frame COUNT`. A function's share is the part
of all samples in which it is on the stack (inclusive), so nested shares add up to more than 100%.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

#: frames every worker thread has; they say nothing about where the time goes
_BORING = ("Thread._bootstrap", "Thread._bootstrap_inner", "WorkerThread.run", "WorkerThread.process_message",
           "Actor.__call__")


def summarise(path: Path, top: int = 30) -> list[tuple[str, float]]:
    """(function, share of samples) for the `top` functions most often on the stack."""
    total = 0
    inclusive: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        for name in {frame.split(" (")[0] for frame in stack.split(";")}:
            inclusive[name] += samples
    # py-spy --subprocesses roots each stack in a "process PID:command" frame
    ranked = [(name, n / total) for name, n in inclusive.most_common()
              if name not in _BORING and not name.startswith("process ")]
    return ranked[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    for name, share in summarise(args.path, args.top):
        print(f"{share:6.1%}  {name}")


if __name__ == "__main__":
    main()
