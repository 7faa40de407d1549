"""Summarise py-spy collapsed stacks (`--format raw`): where the samples of a process went.

    .venv/bin/python bench/profile_summary.py FILE.txt [--top 25] [--filter tikosms]

Prints the functions with the most samples on top of the stack (self) and the functions of the
project present anywhere in the stack (inclusive), each as a share of all samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def summarise(path: Path, top: int, keep: str) -> str:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        self_time[frames[-1]] += n
        for frame in set(frames):
            if keep in frame:
                inclusive[frame] += n
    if not total:
        return f"{path.name}: no samples"
    out = [f"{path.name}: {total} samples", "", "self (top of stack):"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_time.most_common(top)]
    out += ["", f"inclusive ({keep} frames anywhere in the stack):"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m["file"]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{m['func']} ({file})"


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--filter", default="tikosms")
    a = p.parse_args()
    for f in a.files:
        print(summarise(f, a.top, a.filter), end="\n\n")
