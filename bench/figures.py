"""How a benchmark reports: a table on stdout and bench/results/<name>_<time>.json, stamped
with the commit it measured, so the figures of two commits can be compared:

    .venv/bin/python bench/figures.py bench/results/A.json bench/results/B.json
"""

import json
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).parent.parent


def commit() -> str:
    """The checked-out commit, `-dirty` when files differ from it."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            check=False,  # a copy without its history still reports its figures
        )
    except FileNotFoundError:  # no git on this machine
        return "unknown"
    return described.stdout.strip() or "unknown"


def print_table(rows: dict[str, list]) -> None:
    table = [[key, *map(str, values)] for key, values in rows.items()]
    widths = [max(map(len, column)) for column in zip(*table)]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def report(name: str, figures: dict) -> Path:
    figures = {"commit": commit()} | figures
    print_table({key: [value] for key, value in figures.items()})
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(figures, indent=2))
    return path


def compare(paths: list[str]) -> None:
    """Every figure of these result files side by side, one column per file."""
    results = [json.loads(Path(path).read_text()) for path in paths]
    keys = dict.fromkeys(key for figures in results for key in figures)
    print_table({key: [figures.get(key, "-") for figures in results] for key in keys})


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: bench/figures.py RESULT.json RESULT.json [...]")
    compare(sys.argv[1:])
