"""`bench/is_open.py` against this tree's client and an older one's, alternating, in one run.

Exports `client/` at --before (a git revision, default main) to a temporary directory and
runs `bench/is_open.py` (`--quick` with --quick) --rounds times with each client in turn
(the older one first on PYTHONPATH, which comes before the editable install). Each figure is
divided by the dict lookup of its own run, so machine load cancels out; printed is the best
such ratio for each case and client, and after / before. Cases only one client has are
shown for it alone.

    .venv/bin/python bench/is_open_before_after.py [--before REV] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^(?P<label>\S.*?)\s+\d+ calls\s+best\s+(?P<best>[\d,.]+) ns")
BASELINE = "dict lookup"


def export_client(revision: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", revision, "client"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "client"


def run_once(pythonpath: Path | None, quick: bool) -> dict[str, float]:
    """One bench run: each case's best ns divided by the dict lookup of the same run."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    out = subprocess.run(
        [sys.executable, "is_open.py", *(["--quick"] if quick else [])],
        cwd=ROOT / "bench",
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    figures = {
        m["label"]: float(m["best"].replace(",", ""))
        for m in map(LINE.match, out.splitlines())
        if m
    }
    base = next(ns for label, ns in figures.items() if label.startswith(BASELINE))
    return {label: ns / base for label, ns in figures.items() if label.startswith("is_open")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--before", default="main", help="git revision of the older client")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each client")
    parser.add_argument("--quick", action="store_true", help="is_open.py --quick runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = export_client(args.before, Path(tmp))
        before: dict[str, float] = {}
        after: dict[str, float] = {}
        for _ in range(args.rounds):
            for best, path in ((before, old), (after, None)):
                for label, ratio in run_once(path, args.quick).items():
                    best[label] = min(best.get(label, ratio), ratio)
    print(f"is_open / dict lookup (best of {args.rounds} runs each); before = {args.before}")
    for label in dict.fromkeys([*before, *after]):
        was, now = before.get(label), after.get(label)
        if was is not None and now is not None:
            print(
                f"{label:<46} before {was:5.2f}x   after {now:5.2f}x   after/before {now / was:.2f}"
            )
        else:
            print(f"{label:<46} {'after' if now else 'before'} {now or was:5.2f}x only")


if __name__ == "__main__":
    main()
