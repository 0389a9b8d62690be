"""Detection in the child process: sliced inference over images of any size.

Every image is cut into overlapping patches (one patch when it fits); patches of all images
stream through DetInferencer in batches, so small images batch as well as the patches of a
large one. A large image's patch results are merged with NMS (mmdet's large-image helper), so
an object on a patch border is reported once.
"""

import collections
import dataclasses
import itertools
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from mmdet.apis import DetInferencer
from mmdet.utils.large_image import merge_results_by_nms

from ..datasets.rasters import RasterInfo, open_raster, raster_info
from ..detections import split_by_score, write_outputs
from ..ignore_zones import IgnoreZones, flag_ignored, read_ignore_zones
from .drawing import DRAWN_SUFFIX, draw_detections
from .large_image import Overview, Patch, iter_patches, patch_windows
from .safe_config import check_config
from .specs import DRAWN_DIR, InferSpec

PROGRESS_SECONDS = 5.0
# Models the warm worker keeps loaded (the tiny one takes 60 MB; a large one several hundred).
WARM_MODELS = 3
WARM_UP_IMAGE_SIZE = 256  # the data pipeline resizes every image to the model's own scale
_warm_models: collections.OrderedDict[tuple, DetInferencer] = collections.OrderedDict()


@dataclasses.dataclass
class ImageWork:
    """One image on its way through: its patches' results arrive batch by batch."""

    id: int
    path: Path
    info: RasterInfo
    windows: list[tuple[int, int, int, int]]
    overview: Overview
    results: list = dataclasses.field(default_factory=list)

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.windows)


class Progress:
    """Progress lines for the run log: at most one every PROGRESS_SECONDS, and the last."""

    def __init__(self, report):
        self.report = report
        self.last = 0.0

    def __call__(self, message: str, final: bool = False) -> None:
        if final or time.monotonic() - self.last >= PROGRESS_SECONDS:
            self.report(message)
            self.last = time.monotonic()


def _patch_stream(spec: InferSpec) -> Iterator[tuple[ImageWork, Patch]]:
    """(image, patch) for every patch of every image, each image open only while it is read."""
    for index, path in enumerate(spec.images, start=1):
        with open_raster(path) as dataset:
            info = raster_info(dataset)
            windows = patch_windows(info.width, info.height, spec.patch_size, spec.patch_overlap)
            work = ImageWork(index, Path(path), info, windows, Overview(info.width, info.height))
            for patch in iter_patches(dataset, windows, work.overview):
                yield work, patch


def _batches(items: Iterator, size: int) -> Iterator[list]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def merged_instances(work: ImageWork, nms_iou: float):
    """The image's detections: its patches' results in image coordinates, merged by NMS."""
    # mmcv's NMS fails on no boxes at all; patches without any add nothing anyway.
    found = [(offset, sample) for offset, sample in work.results if len(sample.pred_instances)]
    if len(work.results) == 1 or not found:  # a small image, or nothing found: nothing to merge
        return work.results[0][1].pred_instances
    offsets, samples = zip(*found)
    merged = merge_results_by_nms(
        list(samples),
        list(offsets),
        (work.info.height, work.info.width),
        dict(type="nms", iou_threshold=nms_iou),
    )
    return merged.pred_instances


def _image_result(
    work: ImageWork, spec: InferSpec, classes: list[str], zones: IgnoreZones | None
) -> dict:
    instances = merged_instances(work, spec.nms_iou)
    detections = [
        {"box": [round(v, 2) for v in box], "score": round(score, 4), "class": classes[label]}
        for box, score, label in zip(
            instances.bboxes.tolist(), instances.scores.tolist(), instances.labels.tolist()
        )
    ]
    if zones and work.info.crs:
        flag_ignored(detections, zones, work.info.crs, work.info.transform)
    kept, below = split_by_score(detections, spec.score_threshold)
    draw_detections(
        work.overview, kept, Path(spec.out_dir) / DRAWN_DIR / f"{work.path.stem}{DRAWN_SUFFIX}"
    )
    return {
        "id": work.id,
        "file": work.path.name,
        "width": work.info.width,
        "height": work.info.height,
        "patches": len(work.windows),
        "crs": work.info.crs,
        "transform": work.info.transform,
        "detections": kept,
        "below_threshold": below,
    }


def warm_up(inferencer: DetInferencer, batch_size: int) -> None:
    """Detects on one batch of blank images, so that the first batch of real ones finds torch,
    oneDNN and the data pipeline set up for this process and its number of threads."""
    blank = np.zeros((WARM_UP_IMAGE_SIZE, WARM_UP_IMAGE_SIZE, 3), np.uint8)
    inferencer(
        [blank] * batch_size, batch_size=batch_size, no_save_vis=True, return_datasamples=True
    )


def _load_model(config: str, checkpoint: str, device: str) -> DetInferencer:
    """The model, once its config is found to be data (mmengine executes it)."""
    check_config(config)
    return DetInferencer(model=config, weights=checkpoint, device=device, show_progress=False)


def warm_model(config: str, checkpoint: str, device: str, warm_up_batch: int = 0) -> DetInferencer:
    """The model for these files: loaded once and kept in this process when it runs on the CPU
    (the warm worker loads it before it forks a run's child, which then finds it here). A
    model loaded here first detects on `warm_up_batch` blank images, if any: torch, oneDNN and
    the data pipeline set themselves up on their first calls, which a forked child then finds
    done (its first batch took 0.33 s instead of 0.18, the others 0.1 s).

    A file replaced under the same name is loaded again; on a GPU every call loads (a model on
    a GPU cannot be handed to a forked child)."""
    if device != "cpu":
        return _load_model(config, checkpoint, device)
    files = (config, checkpoint)
    key = tuple((path, (stat := os.stat(path)).st_mtime_ns, stat.st_size) for path in files)
    if key not in _warm_models:
        inferencer = _load_model(config, checkpoint, "cpu")
        if warm_up_batch:
            warm_up(inferencer, warm_up_batch)
        _warm_models[key] = inferencer
        while len(_warm_models) > WARM_MODELS:
            _warm_models.popitem(last=False)
    _warm_models.move_to_end(key)
    return _warm_models[key]


def infer(spec: InferSpec, device: str, report) -> dict:
    """Writes detections.json, the COCO results, GeoJSON and drawn images into spec.out_dir."""
    started_at = time.time()  # wall clock: compared across runs by bench/suite.py
    inferencer = warm_model(spec.config, spec.checkpoint, device)
    classes = list(inferencer.model.dataset_meta["classes"])
    zones = read_ignore_zones(Path(spec.ignore_zones)) if spec.ignore_zones else None
    progress = Progress(report)
    started = time.monotonic()
    finished: list[Future] = []  # each image's result, drawn and saved by the writer
    # Reading the next patches and drawing finished images overlap inference: GDAL, OpenCV and
    # torch release the GIL, and on a GPU the CPU would otherwise wait for it.
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        batches = _batches(_patch_stream(spec), spec.batch_size)
        next_batch = reader.submit(next, batches, None)
        while (batch := next_batch.result()) is not None:
            next_batch = reader.submit(next, batches, None)
            samples = inferencer(
                [patch.pixels for _, patch in batch],
                batch_size=spec.batch_size,
                no_save_vis=True,
                return_datasamples=True,
            )["predictions"]
            for (work, patch), sample in zip(batch, samples):
                work.results.append((patch.offset, sample))
                if work.done:
                    finished.append(writer.submit(_image_result, work, spec, classes, zones))
            if len(work.windows) > 1 and not work.done:
                progress(f"{work.path.name}: {len(work.results)}/{len(work.windows)} patches")
            else:
                progress(f"detected on {len(finished)}/{len(spec.images)} images")
        images = [result.result() for result in finished]
    progress(f"detected on {len(images)}/{len(spec.images)} images", final=True)
    seconds = time.monotonic() - started
    detections = {
        "classes": classes,
        "score_threshold": spec.score_threshold,
        "patch_size": spec.patch_size,
        "patch_overlap": spec.patch_overlap,
        "nms_iou": spec.nms_iou,
        "record_id": spec.record_id,
        "run_id": spec.run_id,
        "seconds": round(seconds, 3),
        "started_at": started_at,
        "finished_at": time.time(),
        "images": images,
    }
    geojson = write_outputs(detections, Path(spec.out_dir))
    return {"images": len(images), "seconds": round(seconds, 3), "geojson files": len(geojson)}
