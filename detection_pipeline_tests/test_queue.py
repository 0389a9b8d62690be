"""Runs submitted to the real queue and launched by a real Dagster daemon, on SQLite and PostgreSQL."""

import itertools
import json
from pathlib import Path

from dagster import DagsterRunStatus

from detection_pipeline import run_tags
from detection_pipeline.dagster_services import running_daemon
from detection_pipeline.datasets.recall import recall
from detection_pipeline.settings import QueueSettings, RetryPolicy

from .conftest import cli, daemon_log, wait_until
from .test_jobs import MIN_RECALL


def assert_one_at_a_time(spans: list) -> None:
    for (_, end), (next_start, _) in itertools.pairwise(sorted(spans)):
        assert end <= next_start


def test_runs_submitted_together_run_one_at_a_time(queue, datasets):
    images = str(datasets / "unseen" / "images")
    records = [queue.submit("detection", {"images": [images], "model": "tiny"}) for _ in range(3)]
    finished = [queue.wait(record.id, timeout_seconds=300) for record in records]
    assert [r.status for r in finished] == ["success"] * 3, [r.error for r in finished]

    # No overlap, from the records the runs write themselves and from Dagster's own run stats.
    assert_one_at_a_time([(r.started_at, r.finished_at) for r in finished])
    stats = [queue.instance.get_run_stats(r.dagster_run_id) for r in finished]
    assert_one_at_a_time([(s.start_time, s.end_time) for s in stats])

    run = queue.instance.get_run_by_id(finished[0].dagster_run_id)
    assert run.tags[run_tags.RECORD_ID] == str(finished[0].id)
    assert run.tags[run_tags.QUEUE] == "detection"
    assert run.tags[run_tags.PRIORITY] == "10"


def test_a_failing_run_does_not_stop_the_queue(queue, datasets):
    images = str(datasets / "unseen" / "images")
    # No CUDA device here: MMDetection itself fails in the child process.
    failing = queue.submit("detection", {"images": [images], "model": "tiny", "device": "cuda:0"})
    good = queue.submit("detection", {"images": [images], "model": "tiny"})
    failing, good = (
        queue.wait(failing.id, timeout_seconds=300),
        queue.wait(good.id, timeout_seconds=300),
    )
    assert failing.status == "error"
    assert "MMDetection infer failed" in failing.error
    error_log = Path(failing.output_dir) / f"error_{failing.id}.txt"
    assert error_log.is_file() and "Traceback" in error_log.read_text()
    assert not (Path(failing.output_dir) / "staging").exists()
    assert good.status == "success"


def test_cli_submits_waits_and_prints_the_record(queue, datasets):
    images = str(datasets / "unseen" / "images")
    result = cli("detect", "--images", images, "--model", "tiny", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert {"id", "kind", "status", "dagster_run_id", "output_dir", "error"} <= set(record)
    assert record["status"] == "success" and record["kind"] == "detection"
    detections = Path(record["output_dir"]) / "detections.json"
    assert recall(detections, datasets / "unseen" / "annotations.json") >= MIN_RECALL

    assert [r["id"] for r in json.loads(cli("runs", "--json").stdout)] == [record["id"]]
    shown = cli("show", str(record["id"])).stdout
    assert f"run {record['id']} (detection" in shown and "success" in shown

    failed = cli("detect", "--images", images, "--model", "tiny", "--device", "cuda:0", "--wait")
    assert failed.returncode == 1 and "error: MMDetection infer failed" in failed.stdout


def test_a_queue_of_5_survives_a_daemon_restart_each_run_succeeding_exactly_once(
    open_queue, datasets
):
    images = str(datasets / "unseen" / "images")
    # The run the restart interrupts fails (its worker dies with the daemon) and is retried.
    queue = open_queue(
        with_daemon=False,
        queues={"detection": QueueSettings(retry=RetryPolicy(attempts=2, delay_seconds=0))},
    )
    records = [queue.submit("detection", {"images": [images], "model": "tiny"}) for _ in range(5)]
    with running_daemon(queue.instance, queue.settings.home, daemon_log(queue.settings)):
        wait_until(lambda: queue.store.get_run(records[1].id).status == "processing", timeout=180)
    with running_daemon(queue.instance, queue.settings.home, daemon_log(queue.settings)):
        finished = [queue.wait(record.id, timeout_seconds=300) for record in records]

    assert [r.status for r in finished] == ["success"] * 5, [r.error for r in finished]
    runs = queue.instance.get_runs()
    succeeded = [run for run in runs if run.status == DagsterRunStatus.SUCCESS]
    assert sorted(run.tags[run_tags.RECORD_ID] for run in succeeded) == sorted(
        str(r.id) for r in records
    )
    stats = [queue.instance.get_run_stats(run.run_id) for run in runs]
    assert_one_at_a_time([(s.start_time, s.end_time) for s in stats])
    assert all(run.is_finished for run in runs)
