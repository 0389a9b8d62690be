"""The reconciliation sensor: every waiting or processing record agrees with its Dagster run.

A run whose worker died (failed by Dagster's run monitoring), that ended without its record
hearing of it, or that no longer exists, sets its record's status with the reason; a run
launched without a record (UI, GraphQL, schedule) gets one while it is queued."""

from ..records.service import RunService
from ..settings import Settings
from .service_sensor import make_service_sensor


def _reconcile(service: RunService) -> list[str]:
    return [
        f"run {record.id} is {record.status}" + (f": {record.error}" if record.error else "")
        for record in service.reconcile_active()
    ]


def make_reconcile_sensor(settings: Settings):
    return make_service_sensor(
        settings,
        "reconcile_runs",
        "Brings each waiting or processing run record in line with its Dagster run (ended, "
        "failed by run monitoring when its worker died, or gone), and records runs launched "
        "without one.",
        _reconcile,
        "every active record agrees with Dagster",
    )
