"""Recurring runs from the settings: checked when loaded, off until started, and their runs go
through the queue with a record like any other (real daemon, real MMDetection)."""

import re
import subprocess

import pytest
import yaml
from dagster import DefaultScheduleStatus

from detection_pipeline.dagster_services import DEFINITIONS_MODULE, dagster_command
from detection_pipeline.schedules import make_schedules
from detection_pipeline.settings import SETTINGS_FILE, ScheduleSettings, Settings, SettingsError

from .conftest import cli, make_home, wait_until

NIGHTLY = {"name": "nightly", "kind": "detection", "cron": "0 3 * * *"}


def test_schedules_are_checked_when_the_settings_are_loaded(tmp_path, datasets):
    images = {"images": [str(datasets / "unseen" / "images")], "model": "tiny"}
    for wrong, problem in (
        ({"cron": "at three"}, "schedules.0.cron: .*'at three' is not a cron string"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"kind": "painting"}, "schedules.0.kind"),
    ):
        (tmp_path / SETTINGS_FILE).write_text(
            yaml.safe_dump({"schedules": [{**NIGHTLY, "params": images, **wrong}]})
        )
        with pytest.raises(SettingsError, match=problem):
            Settings.load(tmp_path)

    settings = make_home(
        tmp_path / "home", schedules=[{**NIGHTLY, "params": {"images": "not a list"}}]
    )
    with pytest.raises(SettingsError, match="schedule nightly: invalid detection parameters"):
        make_schedules(settings)


def test_a_schedule_is_off_until_started(tmp_path, datasets):
    params = {"dataset": str(datasets / "train"), "name": "weekly"}
    settings = make_home(
        tmp_path / "home",
        schedules=[
            ScheduleSettings(name="retrain", kind="training", cron="0 4 * * 1", params=params)
        ],
    )
    (schedule,) = make_schedules(settings)
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    assert (schedule.job_name, schedule.cron_schedule) == ("train", "0 4 * * 1")


def test_a_started_schedule_runs_through_the_queue_with_a_record(open_queue, datasets):
    params = {"images": [str(datasets / "unseen" / "images")], "model": "tiny"}
    queue = open_queue(
        schedules=[
            ScheduleSettings(name="every_minute", kind="detection", cron="* * * * *", params=params)
        ]
    )
    started = subprocess.run(
        dagster_command("dagster", "schedule", "start", "every_minute", "-m", DEFINITIONS_MODULE),
        capture_output=True,
        text=True,
        check=False,
    )
    assert started.returncode == 0, started.stdout + started.stderr

    record = wait_until(lambda: next(iter(queue.store.list_runs()), None), timeout=90, poll=1)
    done = queue.wait(record.id, timeout_seconds=180)

    assert (done.status, done.kind, done.queue, done.priority) == (
        "success",
        "detection",
        "detection",
        10,
    )
    assert done.params["images"] == params["images"] and done.model == "tiny"
    run = queue.instance.get_run_by_id(done.dagster_run_id)
    assert run.tags["dagster/schedule_name"] == "every_minute"
    status = cli("status")
    assert re.search(r"schedule +every_minute +on ", status.stdout), status.stdout
