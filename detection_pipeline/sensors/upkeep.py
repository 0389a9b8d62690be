"""The upkeep sensor: keeps run records and the queue in order, every tick, in three steps.

1. Reconcile: each waiting or processing record is brought in line with its Dagster run. A run
   whose worker died (failed by Dagster's run monitoring), that ended without its record
   hearing of it, or that no longer exists, sets its record's status with the reason; a run
   launched without a record (UI, GraphQL, schedule) gets one while it is queued.
2. Retry: each failed run is given its next attempt after its queue's delay
   (delay_seconds * backoff_factor^(n-1), settings.RetryPolicy), as a re-execution in the
   same queue with the same priority and record, until its queue's attempts are used up. Bad
   input and runs a user stopped are not retried.
3. Queue due runs: runs submitted with --delay or --at, and retries, are queued once their time
   comes, highest priority first.

One sensor, not one per step: every tick costs the daemon and the code server about 80 ms of
Dagster's own bookkeeping whatever the sensor does, and on a 2-core box three sensors ticking
every 5 s took 8-11 % off a running run's MMDetection work. In this order a run that fails is
decided on, and a retry due at once is queued, in the same tick."""

from collections.abc import Callable

from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from dagster._serdes import serialize_value

from ..instance import opened_instance
from ..records.service import RunService
from ..settings import Settings

# The daemon evaluates sensors in a loop of 5 s (Dagster's MIN_INTERVAL_LOOP_TIME). A minimum
# interval of 5 s too would make a sensor skip every loop that comes a moment early: 10 s ticks.
TICK_SECONDS = 5
MINIMUM_INTERVAL_SECONDS = 1

UPKEEP_SENSOR = "run_upkeep"
IDLE_MESSAGE = "every active record agrees with Dagster; no failed run to decide on; nothing due"


class UpkeepFailed(Exception):
    """Some steps of an upkeep tick failed; the others ran."""


def sensor_instance(context: SensorEvaluationContext) -> DagsterInstance:
    """The instance, opened once per process. Dagster opens a new one for every evaluation,
    which checks its storage's schema: 40 ms of the code server's CPU per tick, most of what
    the sensor costs while a run works."""
    ref = context.instance_ref
    return opened_instance(serialize_value(ref)) if ref else context.instance


def _reconcile(service: RunService) -> list[str]:
    return [
        f"run {record.id} is {record.status}" + (f": {record.error}" if record.error else "")
        for record in service.reconcile_active()
    ]


def _decide_retries(service: RunService) -> list[str]:
    return [f"run {record.id}: {decision}" for record, decision in service.decide_retries()]


def _queue_due_runs(service: RunService) -> list[str]:
    return [
        f"queued run {record.id} as Dagster run {record.dagster_run_id}"
        for record in service.submit_due()
    ]


UPKEEP_STEPS: dict[str, Callable[[RunService], list[str]]] = {
    "reconcile": _reconcile,
    "retry": _decide_retries,
    "queue due runs": _queue_due_runs,
}


def upkeep(service: RunService) -> tuple[list[str], dict[str, Exception]]:
    """Runs every step, each even when one before it failed (a record that trips reconciliation
    must not hold up delayed runs); returns one line per thing done, and what each step that
    failed raised."""
    done, failed = [], {}
    for name, step in UPKEEP_STEPS.items():
        try:
            done += step(service)
        except Exception as error:  # noqa: BLE001 - reported by the tick, after the other steps
            failed[name] = error
    return done, failed


def make_upkeep_sensor(settings: Settings):
    @sensor(
        name=UPKEEP_SENSOR,
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description="Keeps run records and the queue in order, every tick: reconciles waiting "
        "and processing records with their Dagster runs (ended, failed by run monitoring when "
        "their worker died, or gone) and records runs launched without one; retries failed "
        "runs with exponential backoff per their queue's settings (not bad input or runs a "
        "user stopped); queues delayed runs and retries whose time has come.",
    )
    def run_upkeep(context: SensorEvaluationContext) -> SkipReason:
        done, failed = upkeep(RunService(sensor_instance(context), settings))
        if done or failed:
            # Only then: Dagster opens a new instance for the tick's log (its schema checked,
            # its storages connected) the first time it is asked for it.
            log = context.log
            for line in done:
                log.info(line)
            for name, error in failed.items():
                log.error(f"upkeep step {name!r} failed", exc_info=error)
        if failed:
            raise UpkeepFailed(
                "; ".join(
                    f"{name}: {type(error).__name__}: {error}" for name, error in failed.items()
                )
                + (f" (done: {'; '.join(done)})" if done else "")
                + " — the next tick tries again; the tick's log has the traceback"
            )
        return SkipReason("; ".join(done) if done else IDLE_MESSAGE)

    return run_upkeep
