"""The shape of the sensors that keep records and the queue in order: each tick asks the
RunService to do one thing, logs what it did, and says so in the tick's message."""

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


def sensor_instance(context: SensorEvaluationContext) -> DagsterInstance:
    """The instance, opened once per process. Dagster opens a new one for every evaluation,
    which checks its storage's schema: 40 ms of the code server's CPU per tick and sensor,
    most of what the sensors cost while a run works."""
    ref = context.instance_ref
    return opened_instance(serialize_value(ref)) if ref else context.instance


def make_service_sensor(
    settings: Settings,
    name: str,
    description: str,
    work: Callable[[RunService], list[str]],
    idle_message: str,
):
    """A sensor, on by default, that runs `work` every tick; `work` returns one line per thing
    it did."""

    @sensor(
        name=name,
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=description,
    )
    def service_sensor(context: SensorEvaluationContext) -> SkipReason:
        done = work(RunService(sensor_instance(context), settings))
        for line in done:
            context.log.info(line)
        return SkipReason("; ".join(done) if done else idle_message)

    return service_sensor
