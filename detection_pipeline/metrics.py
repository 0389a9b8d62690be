"""Prometheus metrics of the queue, read from the records and the instance at each scrape
(`detection-pipeline metrics`). deploy/prometheus has the alert rules, deploy/grafana a
dashboard."""

import datetime as dt
import json
from pathlib import Path

from dagster import DagsterInstance
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from .detections import DETECTIONS_FILE
from .health import health
from .records import record_store
from .records.schema import Kind, Status, utcnow
from .settings import Settings

PREFIX = "detection_pipeline"
# Run durations are those of runs that ended this recently: what a dashboard shows.
DURATION_WINDOW = dt.timedelta(hours=24)
DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600)


def _histogram(name: str, help_text: str, durations: dict[str, list[float]]):
    family = HistogramMetricFamily(name, help_text, labels=["kind"])
    for kind, seconds in durations.items():
        buckets = [(str(le), sum(s <= le for s in seconds)) for le in DURATION_BUCKETS]
        family.add_metric([kind], [*buckets, ("+Inf", len(seconds))], sum(seconds))
    return family


def _images_per_second(output_dir: str | None) -> float | None:
    try:
        detections = json.loads((Path(output_dir) / DETECTIONS_FILE).read_text())
    except (OSError, TypeError, ValueError):
        return None  # deleted since, or never written
    return len(detections["images"]) / max(detections["seconds"], 1e-9)


class QueueCollector(Collector):
    def __init__(self, instance: DagsterInstance, settings: Settings):
        self.instance = instance
        self.settings = settings
        self.store = record_store(instance)

    def collect(self):
        report = health(self.instance, self.store, self.settings)
        up = GaugeMetricFamily(f"{PREFIX}_daemon_up", "1 while every Dagster daemon is healthy")
        up.add_metric([], float(report.healthy))
        yield up

        waiting = GaugeMetricFamily(
            f"{PREFIX}_waiting_runs", "Runs waiting in each queue", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            f"{PREFIX}_oldest_waiting_seconds",
            "How long the run that has waited longest for its turn has waited (delayed runs "
            "count from their time)",
            labels=["queue"],
        )
        allowed = GaugeMetricFamily(
            f"{PREFIX}_max_wait_seconds",
            "How long a run may wait for its turn (settings: queues.NAME.max_wait_seconds)",
            labels=["queue"],
        )
        for queue, count in report.waiting.items():
            waiting.add_metric([queue], count)
            oldest.add_metric([queue], report.longest_wait[queue])
            allowed.add_metric([queue], self.settings.queue(queue).max_wait_seconds)
        yield from (waiting, oldest, allowed)

        processing = GaugeMetricFamily(
            f"{PREFIX}_processing_runs", "Runs processing now", labels=["queue", "kind"]
        )
        for record in report.processing:
            processing.add_metric([record.queue, record.kind], 1)
        yield processing

        ended = CounterMetricFamily(
            f"{PREFIX}_runs_ended", "Runs that ended", labels=["kind", "queue", "status"]
        )
        retries = CounterMetricFamily(
            f"{PREFIX}_retries", "Attempts beyond each run's first", labels=["queue"]
        )
        retried: dict[str, int] = {}
        for kind, queue, status, runs, extra_attempts in self.store.ended_counts():
            ended.add_metric([kind, queue, status], runs)
            retried[queue] = retried.get(queue, 0) + (extra_attempts or 0)
        for queue, count in retried.items():
            retries.add_metric([queue], count)
        yield from (ended, retries)

        recent = self.store.ended_since(utcnow() - DURATION_WINDOW)
        durations: dict[str, list[float]] = {}
        for record in recent:
            seconds = (record.finished_at - record.started_at).total_seconds()
            durations.setdefault(record.kind, []).append(seconds)
        yield _histogram(
            f"{PREFIX}_run_duration_seconds",
            "Wall time of the last attempt of runs that ended in the last 24 hours",
            durations,
        )

        speed = GaugeMetricFamily(
            f"{PREFIX}_detection_images_per_second",
            "Images per second of MMDetection in the latest successful detection run",
        )
        latest = next(
            (
                r
                for r in recent
                if r.kind == Kind.DETECTION.value and r.status == Status.SUCCESS.value
            ),
            None,
        )
        if latest and (value := _images_per_second(latest.output_dir)) is not None:
            speed.add_metric([], value)
        yield speed
