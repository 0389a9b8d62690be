"""The detect job: prepare_inputs -> run_mmdetection -> collect_outputs -> cleanup."""

import collections
import dataclasses
import json
import os
import shutil
from pathlib import Path

from dagster import (
    MetadataValue,
    OpExecutionContext,
    Out,
    ResourceParam,
    graph,
    op,
)
from pydantic import Field

from ..datasets.validation import confine, find_images
from ..detections import COCO_RESULTS_FILE, DETECTIONS_FILE, GEOJSON_DIR
from ..ignore_zones import read_ignore_zones
from ..mmdet_runner.specs import DRAWN_DIR, InferSpec
from ..models import ModelFiles, resolve_model
from ..params import MAX_BATCH_SIZE, MAX_IMAGE_SIZE, RunParams
from ..records import RecordStore, record_store
from ..records.schema import Kind
from ..resources import MMDetRunner, RunFolders
from .record_lifecycle import bad_input_fails_the_run, cleanup, inputs_checked_at, start_record


class DetectConfig(RunParams):
    images: list[str] = Field(
        description="Image files or folders of images (jpg, png, tif), inside the allowed data folders."
    )
    model: str = Field(
        default="",
        description="A registered model: `name` (latest version) or `name:version`. They are "
        "the assets models/NAME in the Catalog (each version with its bbox mAP), and "
        "`detection-pipeline models` lists them.",
    )
    score_threshold: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="Detections scoring lower are set aside (kept in detections.json under "
        "`below_threshold`; `detection-pipeline export` applies another threshold later).",
    )
    device: str = Field(
        default="cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="`cpu`, `cuda` or `cuda:N`."
    )
    batch_size: int = Field(
        default=4,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="Patches (or small images) per inference batch.",
    )
    patch_size: int = Field(
        default=1280,
        ge=32,
        le=MAX_IMAGE_SIZE,
        description="Images larger than this many pixels a side are cut into patches this size.",
    )
    patch_overlap: float = Field(
        default=0.25, ge=0.0, lt=1.0, description="Share of a patch its neighbours overlap."
    )
    nms_iou: float = Field(
        default=0.25,
        gt=0.0,
        le=1.0,
        description="Patch results are merged by NMS: of two boxes overlapping more than this "
        "IoU, the lower-scoring one goes.",
    )
    ignore_zones: str = Field(
        default="",
        description="A GeoJSON of polygons (in its named CRS, else the image's) inside the "
        "allowed data folders: detections touching them are flagged `in_ignore_zone`.",
    )


@dataclasses.dataclass(frozen=True)
class DetectionPlan:
    record_id: int
    run_dir: Path
    spec: InferSpec


def _stage(images: list[Path], staging: Path) -> list[str]:
    """Symlinks (or copies) the images into the run's staging folder under unique names. Not
    hard links: making and removing one changes the image's ctime, which the inbox sensor
    would take for a new file."""
    staging.mkdir(parents=True, exist_ok=True)
    # Outputs are named by stem (vis/NAME.jpg, geojson/NAME.geojson): stems must not collide.
    names_collide = len({image.stem for image in images}) < len(images)
    staged = []
    for index, image in enumerate(images):
        target = staging / (f"{index:05d}_{image.name}" if names_collide else image.name)
        try:
            os.symlink(image, target)
        except OSError:
            shutil.copy2(image, target)
        staged.append(str(target))
    return staged


def check_detection_inputs(
    config: DetectConfig,
    store: RecordStore,
    roots: tuple[Path, ...],
    checked_at: float | None = None,
) -> tuple[ModelFiles, list[Path], Path | None]:
    """The model's files, the images and the ignore zones' file (or None); raises InputError.
    Images unchanged since `checked_at` (when an earlier check passed) are not read again.

    Submission checks the same."""
    model = resolve_model(store, config.model)
    zones = None
    if config.ignore_zones:
        zones = confine(config.ignore_zones, roots, "ignore zones file")
        read_ignore_zones(zones)
    return model, find_images(config.images, roots, checked_at), zones


@op(out=Out(DetectionPlan))
def prepare_inputs(
    context: OpExecutionContext, config: DetectConfig, folders: ResourceParam[RunFolders]
) -> DetectionPlan:
    """Checks the images and the model, and stages the images in the run's folder."""
    record = start_record(
        context, folders, Kind.DETECTION.value, config.model_dump(), config.model or None
    )
    with bad_input_fails_the_run():
        model, images, zones = check_detection_inputs(
            config, record_store(context.instance), folders.roots, inputs_checked_at(record)
        )
    run_dir = folders.run_dir(record.id)
    spec = InferSpec(
        config=str(model.config),
        checkpoint=str(model.checkpoint),
        images=_stage(images, folders.staging_dir(record.id)),
        out_dir=str(run_dir),
        score_threshold=config.score_threshold,
        batch_size=config.batch_size,
        device=config.device,
        patch_size=config.patch_size,
        patch_overlap=config.patch_overlap,
        nms_iou=config.nms_iou,
        ignore_zones=str(zones or ""),
        record_id=record.id,
        run_id=context.run_id,
    )
    context.add_output_metadata(
        {
            "record id": record.id,
            "model": model.label,
            "images": len(images),
            "run folder": MetadataValue.path(str(run_dir)),
        }
    )
    return DetectionPlan(record.id, run_dir, spec)


@op(out=Out(DetectionPlan))
def run_inference(
    context: OpExecutionContext, plan: DetectionPlan, runner: ResourceParam[MMDetRunner]
) -> DetectionPlan:
    """Runs MMDetection inference in a child process."""
    runner.run(context, plan.spec, plan.run_dir, plan.record_id)
    return plan


@op
def collect_detections(context: OpExecutionContext, plan: DetectionPlan) -> int:
    """Reports what was found: counts per class, speed, and where the files are."""
    detections = json.loads((plan.run_dir / DETECTIONS_FILE).read_text())
    kept = [d for image in detections["images"] for d in image["detections"]]
    per_class = collections.Counter(d["class"] for d in kept)
    metadata = {
        "images": len(detections["images"]),
        "patches": sum(image["patches"] for image in detections["images"]),
        "detections": len(kept),
        "in ignore zones": sum(d.get("in_ignore_zone", False) for d in kept),
        "below threshold": sum(len(image["below_threshold"]) for image in detections["images"]),
        "seconds": detections["seconds"],
        "images/s": round(len(detections["images"]) / max(detections["seconds"], 1e-9), 2),
        "per class": MetadataValue.json(dict(per_class)),
        "detections.json": MetadataValue.path(str(plan.run_dir / DETECTIONS_FILE)),
        "COCO results": MetadataValue.path(str(plan.run_dir / COCO_RESULTS_FILE)),
        "drawn images": MetadataValue.path(str(plan.run_dir / DRAWN_DIR)),
    }
    if (plan.run_dir / GEOJSON_DIR).is_dir():
        metadata["GeoJSON"] = MetadataValue.path(str(plan.run_dir / GEOJSON_DIR))
    context.add_output_metadata(metadata)
    return plan.record_id


@graph
def detection():
    """Detects objects in images with a registered (or given) MMDetection model."""
    plan = prepare_inputs()
    cleanup(
        collect_detections.alias("collect_outputs")(run_inference.alias("run_mmdetection")(plan))
    )
