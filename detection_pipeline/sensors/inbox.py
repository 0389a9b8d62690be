"""The image inbox sensor: new images in the settings' inbox folder become detection runs.

Files are taken in the order of their inode change time (ctime), which every write, copy,
move or rename into the folder sets and no one can set back, so a cursor that remembers the
last file taken (its ctime and name) tells new files from old ones across daemon restarts
without a list that grows. A file is taken once its size and mtime are the same at two looks
a tick apart (fully written), and only when every file before it is taken too, so the cursor
never passes one still being written. A file that is not a readable image is reported and
passed over. Hidden files (`.name`, as uploads in progress often are) are left alone.
"""

import dataclasses
import json
from pathlib import Path

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from ..datasets.validation import IMAGE_SUFFIXES, image_problem
from ..records.schema import Kind
from ..records.service import run_config
from ..settings import InboxSettings
from .upkeep import MINIMUM_INTERVAL_SECONDS


@dataclasses.dataclass(frozen=True)
class InboxFile:
    path: Path
    ctime_ns: int
    size: int
    mtime_ns: int

    @property
    def order(self) -> tuple[int, str]:
        return self.ctime_ns, self.path.name


@dataclasses.dataclass
class InboxScan:
    """What one look at the inbox found: images to detect, in batches; files that are not
    images; and the cursor to look from next time."""

    batches: list[list[InboxFile]]
    not_images: list[str]
    cursor: str
    still_written: int


def _files_after(folder: Path, after: tuple[int, str]) -> list[InboxFile]:
    files = []
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        try:
            stat = entry.stat()
        except FileNotFoundError:  # removed while we looked
            continue
        if entry.is_file():
            file = InboxFile(entry, stat.st_ctime_ns, stat.st_size, stat.st_mtime_ns)
            if file.order > after:
                files.append(file)
    return sorted(files, key=lambda file: file.order)


def _not_an_image(path: Path) -> str | None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"{path.name} (not {', '.join(IMAGE_SUFFIXES)})"
    return image_problem(path)


def scan_inbox(folder: Path, cursor: str | None, max_images_per_run: int) -> InboxScan:
    """Looks at the inbox once, from where `cursor` (the last scan's) left off."""
    state = json.loads(cursor) if cursor else {"after": [0, ""], "seen": {}}
    after = tuple(state["after"])
    seen = state["seen"]  # name -> [size, mtime_ns] at the last look, for files not yet taken
    files = _files_after(folder, after) if folder.is_dir() else []
    taken: list[InboxFile] = []
    for file in files:
        if seen.get(file.path.name) != [file.size, file.mtime_ns]:
            break  # new, or still being written: it and everything after it wait a tick
        taken.append(file)
    problems = {file: _not_an_image(file.path) for file in taken}
    images = [file for file in taken if not problems[file]]
    if taken:
        after = taken[-1].order
    waiting = files[len(taken) :]
    return InboxScan(
        batches=[
            images[start : start + max_images_per_run]
            for start in range(0, len(images), max_images_per_run)
        ],
        not_images=[problem for problem in problems.values() if problem],
        cursor=json.dumps(
            {
                "after": list(after),
                "seen": {file.path.name: [file.size, file.mtime_ns] for file in waiting},
            }
        ),
        still_written=len(waiting),
    )


def _run_request(inbox: InboxSettings, batch: list[InboxFile]) -> RunRequest:
    params = {"images": [str(file.path) for file in batch], "model": inbox.model}
    last_time, last_name = batch[-1].order
    return RunRequest(
        # Where the batch ends in the inbox's order: Dagster never runs the same key twice.
        run_key=f"inbox:{last_time}:{last_name}",
        run_config=run_config(Kind.DETECTION.value, params),
    )


def make_inbox_sensor(inbox: InboxSettings):
    @sensor(
        name="image_inbox",
        job_name="detect",
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"New images in {inbox.folder} become detection runs with model "
        f"{inbox.model}, up to {inbox.max_images_per_run} images each.",
    )
    def image_inbox(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        if not inbox.folder.is_dir():
            return SkipReason(f"inbox folder {inbox.folder} does not exist; create it")
        scan = scan_inbox(inbox.folder, context.cursor, inbox.max_images_per_run)
        for problem in scan.not_images:
            context.log.warning(f"not an image, skipped: {problem}")
        requests = [_run_request(inbox, batch) for batch in scan.batches]
        found = [f"{len(batch)} new image(s) to detect" for batch in scan.batches]
        if scan.not_images:
            found.append(f"skipped, not images: {'; '.join(scan.not_images)}")
        if scan.still_written:
            found.append(f"{scan.still_written} file(s) still being written")
        skip = None if requests else SkipReason("; ".join(found) or "no new images")
        return SensorResult(run_requests=requests, cursor=scan.cursor, skip_reason=skip)

    return image_inbox
