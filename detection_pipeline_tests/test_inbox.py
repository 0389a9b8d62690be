"""The image inbox: one look at a time without a daemon, then images dropped in parts into an
inbox watched by a real daemon (restarted on the way) and detected with real MMDetection."""

import re
import shutil
import time
from pathlib import Path

from dagster import RunsFilter

from detection_pipeline.dagster_services import running_daemon
from detection_pipeline.sensors.inbox import scan_inbox
from detection_pipeline.sensors.upkeep import TICK_SECONDS
from detection_pipeline.settings import InboxSettings, QueueSettings, RetryPolicy

from .conftest import cli, daemon_log, wait_until


def drop(images: list[Path], inbox: Path) -> None:
    for image in images:
        shutil.copy(image, inbox / image.name)


def taken(scan) -> list[str]:
    return [file.path.name for batch in scan.batches for file in batch]


def test_a_file_is_taken_once_fully_written_and_never_again(tmp_path, datasets):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    images = sorted((datasets / "unseen" / "images").iterdir())
    drop(images[:5], inbox)
    (inbox / "notes.txt").write_text("not an image")
    (inbox / ".upload-in-progress.png").write_bytes(b"")

    first = scan_inbox(inbox, None, max_images_per_run=3)
    assert first.batches == [] and first.still_written == 6  # seen once: may still grow

    partial = inbox / "big.png"
    partial.write_bytes(images[5].read_bytes()[:100])  # an upload still under way
    second = scan_inbox(inbox, first.cursor, max_images_per_run=3)
    assert [len(batch) for batch in second.batches] == [3, 2]
    assert sorted(taken(second)) == [image.name for image in images[:5]]
    assert len(second.not_images) == 1 and second.not_images[0].startswith("notes.txt")
    assert second.still_written == 1

    partial.write_bytes(images[5].read_bytes())  # the upload finishes
    assert taken(scan_inbox(inbox, second.cursor, 3)) == []
    third = scan_inbox(inbox, scan_inbox(inbox, second.cursor, 3).cursor, 3)
    assert taken(third) == ["big.png"]
    # Nothing is taken twice, not even after a run staged (symlinked) and read the images;
    # a cursor kept across a restart carries on where it was.
    staged = tmp_path / "staged.png"
    staged.symlink_to(partial)
    staged.read_bytes()
    staged.unlink()
    assert taken(scan_inbox(inbox, third.cursor, 3)) == []
    drop(images[6:8], inbox)
    after = scan_inbox(inbox, third.cursor, 3)
    assert taken(scan_inbox(inbox, after.cursor, 3)) == [image.name for image in images[6:8]]


def test_images_dropped_in_parts_are_each_detected_exactly_once(open_queue, tmp_path, many_images):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    queue = open_queue(
        with_daemon=False,
        inbox=InboxSettings(folder=inbox, model="tiny", max_images_per_run=6),
        # A run the restart interrupts is tried again.
        queues={"detection": QueueSettings(retry=RetryPolicy(delay_seconds=0))},
    )
    images = sorted(many_images.iterdir())[:20]
    with running_daemon(queue.instance, queue.settings.home, daemon_log(queue.settings)):
        drop(images[:7], inbox)
        time.sleep(TICK_SECONDS)
        drop(images[7:12], inbox)
        (inbox / "readme.txt").write_text("the pilot's notes")
        wait_until(lambda: queue.store.list_runs(), timeout=60)  # the first run is in
    # The daemon is away for a while (restarted); images keep coming.
    drop(images[12:16], inbox)
    with running_daemon(queue.instance, queue.settings.home, daemon_log(queue.settings)):
        time.sleep(TICK_SECONDS)
        drop(images[16:], inbox)

        def all_detected():
            records = queue.store.list_runs()
            detected = [image for record in records for image in record.params["images"]]
            done = all(record.status == "success" for record in records)
            return done and len(detected) >= 20 and (records, detected)

        def runs_so_far():  # each record and its Dagster runs, should the wait time out
            return [
                (r.id, r.status, len(r.params["images"]), r.attempts, r.error)
                + tuple(queue.instance.get_run_by_id(i).status.value for i in r.dagster_run_ids)
                for r in queue.store.list_runs()
            ]

        records, detected = wait_until(all_detected, timeout=300, poll=2, state=runs_so_far)
        time.sleep(2 * TICK_SECONDS)  # nothing more comes
        status = cli("status")

    assert len(queue.store.list_runs()) == len(records)
    assert sorted(Path(image).name for image in detected) == [image.name for image in images]
    assert all(len(record.params["images"]) <= 6 for record in records)
    assert all(record.model == "tiny" and record.queue == "detection" for record in records)
    # Each record's first Dagster run is one the inbox sensor requested (later ones retries).
    runs = queue.instance.get_runs(RunsFilter(tags={"dagster/sensor_name": "image_inbox"}))
    requested = sorted(run.run_id for run in runs if run.parent_run_id is None)
    assert requested == sorted(r.dagster_run_ids[0] for r in records)

    assert "not an image, skipped: readme.txt" in daemon_log(queue.settings).read_text()
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(r"SENSOR +healthy", status.stdout), status.stdout
    assert re.search(r"sensor +image_inbox +on ", status.stdout), status.stdout
