"""Bad input: submission refuses it with a message that says what to fix; a run that meets it
fails the same way, writes and deletes nothing outside its own folder."""

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from dagster import instance_for_test

from detection_pipeline import run_tags
from detection_pipeline.datasets.synthetic import make_large_image
from detection_pipeline.datasets.validation import find_images
from detection_pipeline.errors import InputError
from detection_pipeline.jobs.record_lifecycle import NOT_RETRIED_BAD_INPUT
from detection_pipeline.records import record_store
from detection_pipeline.records.service import RunService

from .conftest import (
    bait,
    detect_config,
    execute_job,
    make_home,
    register_as,
    train_config,
    was_read,
)


@pytest.fixture
def world(tmp_path, trained_model):
    """A home whose data folder holds good and bad inputs, plus a folder outside the data roots."""
    settings = make_home(tmp_path / "home")
    data = settings.data_dir
    (data / "good").mkdir(parents=True)
    (data / "empty").mkdir()
    (data / "notes").mkdir()
    (data / "notes" / "readme.txt").write_text("not an image")
    (data / "corrupt").mkdir()
    (data / "corrupt" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (data / "deep").mkdir()
    make_large_image(data / "deep" / "16bit.tif", 64, [], dtype="uint16")
    (data / "zones.geojson").write_text('{"type": "Point", "coordinates": [1, 2]}')
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes((Path(__file__).parent / "conftest.py").read_bytes())
    (outside / "zones.geojson").write_text('{"type": "Polygon", "coordinates": []}')
    os.symlink(outside, data / "link-to-outside")
    # A folder inside the data roots holding a link to a file outside them.
    (data / "mixed").mkdir()
    os.symlink(outside / "secret.png", data / "mixed" / "passwd.png")
    model = trained_model[1]
    shutil.copy(model.config, data / "config.py")
    shutil.copy(model.checkpoint, data / "model.pth")
    return settings, outside


def files_outside_the_run(settings) -> dict:
    """Every file of the test's world (not following links) with its size and mtime, except
    the run folders and the databases and logs of Dagster and the records."""
    home = settings.home
    skip = [
        settings.runs_dir,
        home / "history",
        home / "storage",
        home / "logs",
        home / "schedules",
        home / "records.db",
    ]
    files = {}
    for folder, _, names in os.walk(home.parent):
        for name in names:
            path = Path(folder) / name
            if not any(str(path).startswith(str(prefix)) for prefix in skip):
                stat = path.lstat()
                files[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return files


DETECTION_CASES = {
    "missing folder": ({"images": ["{data}/nope"], "model": "tiny"}, "does not exist"),
    "folder without images": ({"images": ["{data}/empty"], "model": "tiny"}, "has no images"),
    "non-image file": (
        {"images": ["{data}/notes/readme.txt"], "model": "tiny"},
        "is not an image file",
    ),
    "corrupt image": (
        {"images": ["{data}/corrupt"], "model": "tiny"},
        "not readable images: broken.png",
    ),
    "unknown model": ({"images": ["{data}/good"], "model": "nosuch"}, "unknown model 'nosuch'"),
    "outside the data roots": (
        {"images": ["{outside}"], "model": "tiny"},
        "outside the allowed data folders",
    ),
    "symlink out of the data roots": (
        {"images": ["{data}/link-to-outside"], "model": "tiny"},
        "outside the allowed data folders",
    ),
    "missing checkpoint": (
        {"images": ["{data}/good"], "model": "gone"},
        "checkpoint file of model gone:1 is missing",
    ),
    "a config file instead of a registered model": (
        {"images": ["{data}/good"], "model_config_path": "{data}/config.py"},
        "model_config_path: Extra inputs are not permitted",
    ),
    "a link out of the data roots inside a folder": (
        {"images": ["{data}/mixed"], "model": "tiny"},
        "image {data}/mixed/passwd.png is outside the allowed data folders",
    ),
    "a NUL character in a path": (
        {"images": ["{data}/good\u0000/x.png"], "model": "tiny"},
        "holds a NUL character",
    ),
    "a model version beyond any": (
        {"images": ["{data}/good"], "model": "tiny:99999999999999999999999"},
        "the version after ':' must be a number",
    ),
    "a NaN threshold": (
        {"images": ["{data}/good"], "model": "tiny", "score_threshold": float("nan")},
        "score_threshold",
    ),
    "bad device": ({"images": ["{data}/good"], "model": "tiny", "device": "gpu0"}, "device"),
    "../ out of the data roots": (
        {"images": ["{data}/../../outside/secret.png"], "model": "tiny"},
        "outside the allowed data folders",
    ),
    "a model name with quotes": (
        {"images": ["{data}/good"], "model": 'tiny\'; rm -rf "$HOME"'},
        "unknown model",
    ),
    "16-bit image": ({"images": ["{data}/deep"], "model": "tiny"}, "detection needs 8-bit"),
    "ignore zones outside the data roots": (
        {"images": ["{data}/good"], "model": "tiny", "ignore_zones": "{outside}/zones.geojson"},
        "zones.geojson is outside the allowed data folders",
    ),
    "ignore zones that are not areas": (
        {"images": ["{data}/good"], "model": "tiny", "ignore_zones": "{data}/zones.geojson"},
        "a Point is not an area",
    ),
}


# Refused by the run config's check (or Dagster's) before a run could start with them.
CONFIG_CASES = {"bad device", "a config file instead of a registered model", "a NaN threshold"}


def _fill(params, settings, outside):
    text = (
        json.dumps(params)
        .replace("{data}", str(settings.data_dir))
        .replace("{outside}", str(outside))
    )
    return json.loads(text)


@pytest.mark.parametrize("case", DETECTION_CASES)
def test_bad_detection_input_is_refused_and_fails_the_run(world, trained_model, case, datasets):
    settings, outside = world
    shutil.copytree(datasets / "unseen" / "images", settings.data_dir / "good", dirs_exist_ok=True)
    params, message = DETECTION_CASES[case]
    params, message = _fill(params, settings, outside), _fill(message, settings, outside)
    model = trained_model[1]
    with instance_for_test(temp_dir=str(settings.home)) as instance:
        service = RunService(instance, settings)
        register_as(service.store, "tiny", model)
        register_as(service.store, "gone", model, checkpoint=str(settings.data_dir / "gone.pth"))
        with pytest.raises(InputError, match=re.escape(message)):
            service.submit("detection", params)
        assert service.store.list_runs() == []  # a refused submission leaves no record

        if case in CONFIG_CASES:
            return  # refused before any run is stored (test_security.py), else by Dagster
        before = files_outside_the_run(settings)
        result = execute_job(
            settings,
            "detect",
            run_config={"ops": {"prepare_inputs": {"config": params}}},
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        [record] = record_store(instance).list_runs()
    assert record.status == "error"
    assert message in record.error
    assert record.not_retried == NOT_RETRIED_BAD_INPUT  # waiting does not make it better
    assert files_outside_the_run(settings) == before
    assert not (Path(record.output_dir) / "staging").exists()


def _broken_coco(folder: Path, datasets: Path) -> Path:
    shutil.copytree(datasets / "train", folder)
    coco = json.loads((folder / "annotations.json").read_text())
    coco["annotations"][0]["image_id"] = 999
    coco["annotations"][1]["category_id"] = 7
    (coco["images"][2]).update(file_name="missing.png")
    (folder / "annotations.json").write_text(json.dumps(coco))
    return folder


def test_broken_coco_is_refused_with_every_problem_named(world, datasets):
    settings, _ = world
    dataset = _broken_coco(settings.data_dir / "broken", datasets)
    with instance_for_test(temp_dir=str(settings.home)) as instance:
        service = RunService(instance, settings)
        with pytest.raises(InputError) as refused:
            service.submit("training", {"dataset": str(dataset), "name": "m"})
        before = files_outside_the_run(settings)
        result = execute_job(
            settings,
            "train",
            run_config=train_config(dataset, "m"),
            instance=instance,
            raise_on_error=False,
        )
        [record] = record_store(instance).list_runs()
    message = str(refused.value)
    for problem in ("unknown image 999", "unknown category 7", "missing.png is missing"):
        assert problem in message and problem in record.error
    assert not result.success and record.status == "error"
    assert files_outside_the_run(settings) == before


def test_a_coco_dataset_names_no_image_outside_its_folder(world, datasets):
    """Absolute and `..` file names are refused, and a link in images/ is followed before the
    check: no file outside the data roots is opened, neither on submission nor by the run."""
    settings, outside = world
    dataset = settings.data_dir / "escape"
    shutil.copytree(datasets / "train", dataset)
    secret = outside / "photo.png"
    shutil.copy(next((datasets / "train" / "images").iterdir()), secret)
    os.symlink(secret, dataset / "images" / "linked.png")
    climbing = os.path.relpath(secret, dataset / "images")
    coco = json.loads((dataset / "annotations.json").read_text())
    for image, name in zip(coco["images"], [str(secret), climbing, "linked.png"], strict=False):
        image["file_name"] = name
    (dataset / "annotations.json").write_text(json.dumps(coco))
    bait(secret)
    with instance_for_test(temp_dir=str(settings.home)) as instance:
        with pytest.raises(InputError) as refused:
            RunService(instance, settings).submit(
                "training", {"dataset": str(dataset), "name": "m"}
            )
        result = execute_job(
            settings, "train", train_config(dataset, "m"), instance, raise_on_error=False
        )
        [record] = record_store(instance).list_runs()
    assert not result.success and record.status == "error"
    for problem in (
        f"image {secret} is not a name inside",
        f"image {climbing} is not a name inside",
        "linked.png is outside the allowed data folders",
    ):
        assert problem in str(refused.value) and problem in record.error
    assert not was_read(secret)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"dataset": "{data}/nope", "name": "m"}, "does not exist"),
        ({"dataset": "{data}/empty", "name": "m"}, "needs annotations.json"),
        ({"dataset": "{outside}", "name": "m"}, "outside the allowed data folders"),
        ({"dataset": "{data}/empty", "name": "../evil"}, "model name '../evil' is not allowed"),
        ({"dataset": "{data}/empty", "name": "m", "epochs": 0}, "epochs"),
        ({"dataset": "{data}/empty", "name": 'a"b'}, "model name 'a\"b' is not allowed"),
        (
            {"dataset": "{data}/empty", "name": "m", "base_model": "nosuch"},
            "unknown model 'nosuch'",
        ),
        (
            {"dataset": "{data}/empty", "name": "m", "base_config_path": "{data}/config.py"},
            "base_config_path: Extra inputs are not permitted",
        ),
        ({"dataset": "{data}/empty", "name": "m", "epochs": 10**30}, "epochs"),
        ({"dataset": "{data}/empty", "name": "m", "learning_rate": float("inf")}, "learning_rate"),
        (
            {"dataset": "{data}/empty", "name": "m", "val_fraction": 0.5, "test_fraction": 0.5},
            "leave no images for training",
        ),
    ],
)
def test_bad_training_input_is_refused(world, params, message):
    settings, outside = world
    with (
        instance_for_test(temp_dir=str(settings.home)) as instance,
        pytest.raises(InputError, match=message),
    ):
        RunService(instance, settings).submit("training", _fill(params, settings, outside))


def test_run_config_cannot_widen_the_data_roots_or_choose_the_program(
    world, trained_model, datasets
):
    """The launchpad and GraphQL take a whole run config: one naming the resources must not
    reach them, or a user could read any folder or run any program as MMDetection."""
    settings, outside = world
    shutil.copytree(datasets / "unseen" / "images", settings.data_dir / "good", dirs_exist_ok=True)
    marker = outside / "ran"
    evil = outside / "evil-python"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    evil.chmod(0o755)
    resources = {
        "folders": {"config": {"roots": ["/"], "input_roots": ["/"]}},
        "runner": {"config": {"python_executable": str(evil)}},
    }
    with instance_for_test(temp_dir=str(settings.home)) as instance:
        register_as(record_store(instance), "tiny", trained_model[1])
        for images in (outside, settings.data_dir / "good"):
            run_config = {**detect_config(images, "tiny"), "resources": resources}
            execute_job(settings, "detect", run_config, instance, raise_on_error=False)
        refused, detected = record_store(instance).list_runs()
    assert refused.status == "error" and "outside the allowed data folders" in refused.error
    assert detected.status == "success"  # with the settings' Python, not the run config's
    assert not marker.exists()


def test_an_image_broken_after_submission_fails_the_run(world, trained_model, datasets):
    """The run checks again only what changed since submission checked it."""
    settings, _ = world
    images = settings.data_dir / "good"
    shutil.copytree(datasets / "unseen" / "images", images, dirs_exist_ok=True)
    with instance_for_test(temp_dir=str(settings.home)) as instance:
        service = RunService(instance, settings)
        register_as(service.store, "tiny", trained_model[1])
        record = service.submit("detection", {"images": [str(images)], "model": "tiny"})
        broken = sorted(images.iterdir())[1]
        broken.write_bytes(broken.read_bytes()[:200])  # cut short, as an interrupted copy
        result = execute_job(
            settings,
            "detect",
            detect_config(images, "tiny"),
            instance,
            tags={run_tags.RECORD_ID: str(record.id)},  # as the queue launches it
            raise_on_error=False,
        )
        record = service.store.get_run(record.id)
    assert not result.success and record.status == "error"
    assert f"not readable images: {broken.name}" in record.error


def test_images_unchanged_since_a_check_are_not_read_again(tmp_path):
    roots = (tmp_path,)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError, match="not readable images: broken.png"):
        find_images([str(tmp_path)], roots)
    checked_at = broken.stat().st_ctime + 2  # checked a while after it was written
    assert find_images([str(tmp_path)], roots, checked_at) == [broken]  # trusted: not read
    time.sleep(2)  # then it changes: any change of the file's status has it read again
    os.chmod(broken, 0o644)
    with pytest.raises(InputError, match="not readable images: broken.png"):
        find_images([str(tmp_path)], roots, checked_at)


def test_a_png_cut_short_is_refused_whatever_its_size(tmp_path):
    """A PNG must end in its end chunk: checked without reading it through, so also for images
    larger than any whole-file check could afford (Pillow's verify stopped at 89 M pixels)."""
    huge = tmp_path / "huge.png"
    assert cv2.imwrite(str(huge), np.zeros((10_000, 10_000), np.uint8))  # 100 M pixels
    complete = huge.read_bytes()
    (tmp_path / "padded.png").write_bytes(complete + b"\0" * 16)  # a writer's trailing bytes
    assert find_images([str(tmp_path)], (tmp_path,)) == [huge, tmp_path / "padded.png"]
    huge.write_bytes(complete[: len(complete) // 2])  # an interrupted copy
    with pytest.raises(InputError, match=r"not readable images: huge.png \(cut short"):
        find_images([str(tmp_path)], (tmp_path,))


@pytest.fixture
def small_runs_disk(world):
    """The home's runs folder on an 8 MB tmpfs of its own (mounting needs root)."""
    runs = world[0].runs_dir
    runs.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(runs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield runs
    subprocess.run(["umount", "--lazy", str(runs)], check=True)


def test_a_full_runs_disk_fails_the_run_naming_the_folder(
    world, trained_model, datasets, small_runs_disk
):
    """A disk with no space left fails the run saying which folder is full and what to do;
    once there is space, the same run works."""
    settings, _ = world
    images = settings.data_dir / "good"
    shutil.copytree(datasets / "unseen" / "images", images, dirs_exist_ok=True)
    filler = small_runs_disk / "filler"
    with filler.open("wb", buffering=0) as file, contextlib.suppress(OSError):  # ENOSPC
        while True:
            file.write(bytes(4096))
    with instance_for_test(temp_dir=str(settings.home)) as instance:
        service = RunService(instance, settings)
        register_as(service.store, "tiny", trained_model[1])
        outcomes = []
        for _ in range(2):
            record = service.submit("detection", {"images": [str(images)], "model": "tiny"})
            execute_job(
                settings,
                "detect",
                detect_config(images, "tiny"),
                instance,
                tags={run_tags.RECORD_ID: str(record.id)},
                raise_on_error=False,
            )
            outcomes.append(service.store.get_run(record.id))
            filler.unlink(missing_ok=True)  # space freed for the second
    full, freed = outcomes
    assert full.status == "error", full.error
    assert f"no space left on the disk of {settings.runs_dir}" in full.error
    assert "free space there" in full.error
    assert freed.status == "success", freed.error
