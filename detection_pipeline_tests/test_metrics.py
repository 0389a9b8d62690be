"""Prometheus metrics (`detection-pipeline metrics`), the alert rules and the Grafana dashboard
shipped in deploy/."""

import datetime as dt
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import requests
from dagster import DagsterInstance
from prometheus_client.parser import text_string_to_metric_families

from detection_pipeline.records import record_store
from detection_pipeline.records.schema import utcnow

from .conftest import CLI, free_port, make_home, system_tool

DEPLOY = Path(__file__).parents[1] / "deploy"


def _records(store, runs_dir: Path) -> None:
    """One of each: a run waiting two hours for its turn, one delayed, one processing, a
    detection that succeeded at 2 images/s, a training that failed after three attempts."""
    now = utcnow()
    params = {"images": ["x"], "model": "m"}
    late, _ = store.create_run("detection", "detection", 10, params, "m")
    store.update(late.id, created_at=now - dt.timedelta(hours=2))
    store.create_run("training", "default", 0, {}, "m", run_at=now + dt.timedelta(hours=1))
    busy, _ = store.create_run("detection", "detection", 10, params, "m")
    store.update(busy.id, status="processing", started_at=now)
    done, _ = store.create_run("detection", "detection", 10, params, "m")
    (runs_dir / str(done.id)).mkdir(parents=True)
    (runs_dir / str(done.id) / "detections.json").write_text(
        json.dumps({"images": [{}] * 8, "seconds": 4.0})
    )
    store.update(
        done.id,
        status="success",
        started_at=now - dt.timedelta(seconds=50),
        finished_at=now - dt.timedelta(seconds=5),
        output_dir=str(runs_dir / str(done.id)),
    )
    failed, _ = store.create_run("training", "default", 0, {}, "m")
    store.update(
        failed.id,
        status="error",
        attempts=3,
        started_at=now - dt.timedelta(seconds=400),
        finished_at=now,
    )


def _scrape(url: str) -> tuple[str, dict[tuple[str, tuple], float]]:
    text = requests.get(url, timeout=10).text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, samples


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_the_exporter_reports_the_queue_from_the_records(tmp_path, request, storage):
    postgres_url = request.getfixturevalue("postgres_url") if storage == "postgres" else None
    settings = make_home(tmp_path / "home", postgres_url)
    with DagsterInstance.from_config(str(settings.home)) as instance:
        _records(record_store(instance), settings.runs_dir)
    port = free_port()
    exporter = subprocess.Popen(
        [CLI, "metrics", "--port", str(port)],
        env={**os.environ, "DAGSTER_HOME": str(settings.home)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert f"http://127.0.0.1:{port}/metrics" in exporter.stdout.readline()
        text, samples = _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)

    def value(name, **labels):
        return samples[(f"detection_pipeline_{name}", tuple(sorted(labels.items())))]

    assert value("waiting_runs", queue="detection") == 1
    assert value("waiting_runs", queue="default") == 1
    assert 7200 <= value("oldest_waiting_seconds", queue="detection") < 7300
    assert value("oldest_waiting_seconds", queue="default") == 0  # its time has not come
    assert value("max_wait_seconds", queue="detection") == 3600
    assert value("processing_runs", queue="detection", kind="detection") == 1
    assert value("runs_ended_total", kind="detection", queue="detection", status="success") == 1
    assert value("runs_ended_total", kind="training", queue="default", status="error") == 1
    assert value("retries_total", queue="default") == 2
    assert value("run_duration_seconds_count", kind="detection") == 1
    assert value("run_duration_seconds_bucket", kind="detection", le="60") == 1
    assert value("run_duration_seconds_bucket", kind="detection", le="30") == 0
    assert value("run_duration_seconds_bucket", kind="training", le="600") == 1
    assert value("detection_images_per_second") == 2.0
    assert value("daemon_up") == 0  # no daemon runs for this home

    lint = subprocess.run(
        [system_tool("promtool"), "check", "metrics"],
        check=False,
        input=text,
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_the_alert_rules_fire_when_a_run_waits_too_long_or_the_daemon_is_down():
    promtool = system_tool("promtool")
    folder = DEPLOY / "prometheus"
    for command in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],  # alert timing and texts on given series
    ):
        result = subprocess.run(
            [promtool, *command], check=False, cwd=folder, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_and_rules_use_only_exported_metrics(tmp_path):
    suffixes = re.compile("(_bucket|_count|_sum|_total)$")
    exported = {
        suffixes.sub("", line.split()[2])
        for line in _exposition(tmp_path).splitlines()
        if line.startswith("# TYPE")
    }
    dashboard = json.loads((DEPLOY / "grafana" / "detection_pipeline.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    expressions.append((DEPLOY / "prometheus" / "alerts.yml").read_text())
    used = {
        suffixes.sub("", name)
        for expression in expressions
        for name in re.findall(r"detection_pipeline_[a-z_]+", expression)
    }
    assert used and used <= exported, used - exported


def _exposition(tmp_path) -> str:
    """What the exporter serves for an empty home."""
    from prometheus_client import CollectorRegistry, generate_latest

    from detection_pipeline.metrics import QueueCollector

    settings = make_home(tmp_path / "home")
    with DagsterInstance.from_config(str(settings.home)) as instance:
        registry = CollectorRegistry()
        registry.register(QueueCollector(instance, settings))
        return generate_latest(registry).decode()
