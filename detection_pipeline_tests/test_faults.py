"""The fault suite's smoke subset (bench/faults.py --smoke): the real service on SQLite, runs
submitted through the CLI and GraphQL while MMDetection children and the daemon are killed;
nothing lost, run twice, stuck, orphaned or touched outside the runs' folders."""

import json
import subprocess
import sys
from pathlib import Path

FAULTS_SCRIPT = Path(__file__).parents[1] / "bench" / "faults.py"
ZERO_COLUMNS = ("lost", "duplicated", "stuck", "orphans", "outside_touched", "crashed")


def test_the_smoke_plan_loses_nothing_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "faults.json"
    table = tmp_path / "faults.md"
    done = subprocess.run(
        [
            sys.executable,
            str(FAULTS_SCRIPT),
            "--smoke",
            "--out",
            str(out),
            "--markdown",
            str(table),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["scenario"] for row in rows] == ["kill-child", "kill-daemon"]
    for row in rows:
        assert row["faults"] >= 1, row
        assert row["submitted"] == 8, row
        assert {column: row[column] for column in ZERO_COLUMNS} == dict.fromkeys(ZERO_COLUMNS, 0), (
            row
        )
        assert row["succeeded"] == row["submitted"], row
    assert "| kill-child | sqlite | 8 |" in table.read_text()
