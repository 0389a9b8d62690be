"""The delayed-run sensor: queues runs submitted with --delay or --at, and retries, once their
time comes."""

from ..records.service import RunService
from ..settings import Settings
from .service_sensor import make_service_sensor


def _queue_due_runs(service: RunService) -> list[str]:
    return [
        f"queued run {record.id} as Dagster run {record.dagster_run_id}"
        for record in service.submit_due()
    ]


def make_delayed_runs_sensor(settings: Settings):
    return make_service_sensor(
        settings,
        "delayed_runs",
        "Queues runs submitted with --delay or --at, and retries, when their time has come, "
        "highest priority first.",
        _queue_due_runs,
        "no delayed run or retry is due",
    )
