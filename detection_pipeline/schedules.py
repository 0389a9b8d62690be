"""Recurring runs from the settings' `schedules`: detection over a folder, retraining on a
dataset. Each is off until started in the Dagster UI (or `dagster schedule start`), where it
can also be tried by hand; its runs go through the queue like any other and get their record
from the upkeep sensor while queued."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from .errors import InputError
from .records.service import JOBS, parse_params, run_config
from .settings import ScheduleSettings, Settings, SettingsError


def _schedule(schedule: ScheduleSettings) -> ScheduleDefinition:
    try:
        params = parse_params(schedule.kind, schedule.params).model_dump()
    except InputError as error:
        raise SettingsError(f"schedule {schedule.name}: {error}; fix its params") from error
    return ScheduleDefinition(
        name=schedule.name,
        job_name=JOBS[schedule.kind].job_name,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        run_config=run_config(schedule.kind, params),
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Recurring {schedule.kind} ({schedule.cron}, {schedule.timezone}): "
        + ", ".join(f"{key}={value}" for key, value in schedule.params.items()),
    )


def make_schedules(settings: Settings) -> list[ScheduleDefinition]:
    return [_schedule(schedule) for schedule in settings.schedules]
