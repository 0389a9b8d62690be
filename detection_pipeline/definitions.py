"""The one Definitions object: jobs and resources for the Dagster home in DAGSTER_HOME."""

from dagster import Definitions

from .instance import dagster_home
from .jobs.detect import detection
from .jobs.queued_job import queued_job
from .jobs.train import training
from .process_group import end_with_supervisor
from .records.schema import Kind
from .resources import MMDetRunner, RunFolders
from .schedules import make_schedules
from .sensors.inbox import make_inbox_sensor
from .sensors.upkeep import make_upkeep_sensor
from .settings import Settings

# The code server `up` starts loads this module: it ends with `up`, even one killed by kill -9.
end_with_supervisor()


def build_resources(settings: Settings) -> dict:
    return {
        "folders": RunFolders(
            runs_dir=settings.runs_dir,
            models_dir=settings.models_dir,
            roots=settings.input_roots,
        ),
        "runner": MMDetRunner(
            python_executable=settings.python_executable,
            timeout_seconds=settings.timeout_seconds,
            warm_worker=settings.warm_worker,
            warm_idle_seconds=settings.warm_idle_seconds,
        ),
    }


def build_definitions(settings: Settings) -> Definitions:
    inbox = [make_inbox_sensor(settings.inbox)] if settings.inbox else []
    return Definitions(
        jobs=[
            queued_job(detection, "detect", Kind.DETECTION.value, settings),
            queued_job(training, "train", Kind.TRAINING.value, settings),
        ],
        sensors=[make_upkeep_sensor(settings), *inbox],
        schedules=make_schedules(settings),
        resources=build_resources(settings),
    )


defs = build_definitions(Settings.load(dagster_home()))
