"""The delayed-run sensor: queues runs submitted with --delay or --at once their time comes."""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from ..records.service import RunService
from ..settings import Settings

TICK_SECONDS = 5


def make_delayed_runs_sensor(settings: Settings):
    @sensor(
        name="delayed_runs",
        minimum_interval_seconds=TICK_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description="Queues runs submitted with --delay or --at when their time has come, "
        "highest priority first.",
    )
    def delayed_runs(context: SensorEvaluationContext) -> SkipReason:
        queued = RunService(context.instance, settings).submit_due()
        for record in queued:
            context.log.info(
                f"queued delayed run {record.id} as Dagster run {record.dagster_run_id}"
            )
        return SkipReason(
            f"queued {len(queued)} delayed run(s)" if queued else "no delayed run is due"
        )

    return delayed_runs
