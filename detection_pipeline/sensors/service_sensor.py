"""The shape of the sensors that keep records and the queue in order: each tick asks the
RunService to do one thing, logs what it did, and says so in the tick's message."""

from collections.abc import Callable

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from ..records.service import RunService
from ..settings import Settings

TICK_SECONDS = 5


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
        minimum_interval_seconds=TICK_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=description,
    )
    def service_sensor(context: SensorEvaluationContext) -> SkipReason:
        done = work(RunService(context.instance, settings))
        for line in done:
            context.log.info(line)
        return SkipReason("; ".join(done) if done else idle_message)

    return service_sensor
