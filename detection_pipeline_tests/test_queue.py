"""Runs submitted to the real queue and launched by a real Dagster daemon, on SQLite and PostgreSQL."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from detection_pipeline import run_tags
from detection_pipeline.datasets.recall import recall
from detection_pipeline.records.service import RunService

from .test_jobs import MIN_RECALL

CLI = str(Path(sys.executable).parent / "detection-pipeline")


def register_tiny(service: RunService, model) -> None:
    """Makes the session's tiny model known in this home under the same name."""
    service.store.register_model(
        "tiny",
        classes=model.classes,
        config=model.config,
        checkpoint=model.checkpoint,
        metrics=model.metrics,
    )


def assert_one_at_a_time(spans: list) -> None:
    for (_, end), (next_start, _) in itertools.pairwise(sorted(spans)):
        assert end <= next_start


@pytest.fixture
def service(daemon_home, trained_model):
    with daemon_home.instance() as instance:
        service = RunService(instance, daemon_home.settings)
        register_tiny(service, trained_model[1])
        yield service


def test_runs_submitted_together_run_one_at_a_time(service, datasets):
    images = str(datasets / "unseen" / "images")
    records = [service.submit("detection", {"images": [images], "model": "tiny"}) for _ in range(3)]
    finished = [service.wait(record.id, timeout_seconds=300) for record in records]
    assert [r.status for r in finished] == ["success"] * 3, [r.error for r in finished]

    # No overlap, from the records the runs write themselves and from Dagster's own run stats.
    assert_one_at_a_time([(r.started_at, r.finished_at) for r in finished])
    stats = [service.instance.get_run_stats(r.dagster_run_id) for r in finished]
    assert_one_at_a_time([(s.start_time, s.end_time) for s in stats])

    run = service.instance.get_run_by_id(finished[0].dagster_run_id)
    assert run.tags[run_tags.RECORD_ID] == str(finished[0].id)
    assert run.tags[run_tags.QUEUE] == "detection"
    assert run.tags[run_tags.PRIORITY] == "10"


def test_a_failing_run_does_not_stop_the_queue(service, datasets):
    images = str(datasets / "unseen" / "images")
    # No CUDA device here: MMDetection itself fails in the child process.
    failing = service.submit("detection", {"images": [images], "model": "tiny", "device": "cuda:0"})
    good = service.submit("detection", {"images": [images], "model": "tiny"})
    failing, good = (
        service.wait(failing.id, timeout_seconds=300),
        service.wait(good.id, timeout_seconds=300),
    )
    assert failing.status == "error"
    assert "MMDetection infer failed" in failing.error
    error_log = Path(failing.output_dir) / f"error_{failing.id}.txt"
    assert error_log.is_file() and "Traceback" in error_log.read_text()
    assert not (Path(failing.output_dir) / "staging").exists()
    assert good.status == "success"


def test_cli_submits_waits_and_prints_the_record(daemon_home, service, datasets):
    result = subprocess.run(
        [
            CLI,
            "detect",
            "--images",
            str(datasets / "unseen" / "images"),
            "--model",
            "tiny",
            "--wait",
            "--json",
        ],
        env=daemon_home.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert {"id", "kind", "status", "dagster_run_id", "output_dir", "error"} <= set(record)
    assert record["status"] == "success" and record["kind"] == "detection"
    detections = Path(record["output_dir"]) / "detections.json"
    assert recall(detections, datasets / "unseen" / "annotations.json") >= MIN_RECALL

    listed = subprocess.run(
        [CLI, "runs", "--json"], env=daemon_home.env, capture_output=True, text=True, check=True
    )
    assert [r["id"] for r in json.loads(listed.stdout)] == [record["id"]]
    shown = subprocess.run(
        [CLI, "show", str(record["id"])],
        env=daemon_home.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"run {record['id']} (detection" in shown.stdout and "success" in shown.stdout

    failed = subprocess.run(
        [
            CLI,
            "detect",
            "--images",
            str(datasets / "unseen" / "images"),
            "--model",
            "tiny",
            "--device",
            "cuda:0",
            "--wait",
        ],
        env=daemon_home.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert failed.returncode == 1 and "error: MMDetection infer failed" in failed.stdout
