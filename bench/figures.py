"""How a benchmark reports: a table on stdout and bench/results/<name>_<time>.json, so the
figures of two commits can be compared."""

import json
import time
from pathlib import Path


def report(name: str, figures: dict) -> Path:
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(figures, indent=2))
    return path
