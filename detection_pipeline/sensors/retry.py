"""The retry sensor: a failed run is tried again after its queue's delay, as a re-execution of
the failed Dagster run in the same queue with the same priority and record, until its queue's
attempts are used up. Bad input and runs a user stopped are not retried.

The delay of attempt n is delay_seconds * backoff_factor^(n-1) (settings.RetryPolicy); the
delayed-run sensor queues the retry when that time comes."""

from ..records.service import RunService
from ..settings import Settings
from .service_sensor import make_service_sensor


def _decide(service: RunService) -> list[str]:
    return [f"run {record.id}: {decision}" for record, decision in service.decide_retries()]


def make_retry_sensor(settings: Settings):
    return make_service_sensor(
        settings,
        "retry_failed_runs",
        "Retries failed runs with exponential backoff, per their queue's retry settings; bad "
        "input and runs stopped by a user are not retried.",
        _decide,
        "no failed run to decide on",
    )
