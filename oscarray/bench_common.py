"""What the `oscarray bench` jobs share: the devices they build for, the header of a result
(date, machine), the check of the names asked for, and best-of timing of a NumPy reference."""

from __future__ import annotations

import datetime
import subprocess
import time
from pathlib import Path

from . import flows

__all__ = ["DEVICES", "header", "check_names", "best_seconds"]

# The devices of `bench array` and `bench attention`: device name -> board.
DEVICES = {"up5k": "icebreaker", "ecp5-85f": "ulx3s-85f"}


def header() -> dict:
    """The start of a bench result: today's date, this machine and the source's commit."""
    return {"date": datetime.date.today().isoformat(), "machine": flows.machine_description(),
            "commit": source_commit()}


def source_commit() -> str | None:
    """The git commit of this source tree ("-dirty" when it has changes), or None outside a
    git checkout."""
    here = Path(__file__).resolve().parent

    def git(*words):
        return subprocess.run(["git", *words], cwd=here, capture_output=True, text=True,
                              timeout=30)
    try:
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def check_names(what: str, names, known, example: str) -> tuple:
    """`names` (a collection of keys of `known`, each once) as a tuple in `known`'s order:
    `hdl.array.check_names` (ValueError naming the unknown ones; TypeError for a bare
    string), before any work."""
    from .hdl.array import check_names as check
    return check(names, tuple(known), what, example)


def best_seconds(function, *, repeats: int = 7, min_seconds: float = 0.2) -> tuple[float, int]:
    """(the fastest of the calls of `function()`, the number of calls): at least `repeats`
    calls, and more until `min_seconds` have passed."""
    best, calls, start = float("inf"), 0, time.perf_counter()
    while calls < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - t0)
        calls += 1
    return best, calls
