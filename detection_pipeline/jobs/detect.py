"""The detect job: prepare_inputs -> run_mmdetection -> collect_outputs -> cleanup."""

import collections
import dataclasses
import json
import os
import shutil
from pathlib import Path

from dagster import (
    Config,
    MetadataValue,
    OpExecutionContext,
    Out,
    in_process_executor,
    job,
    op,
)
from pydantic import Field

from ..datasets.validation import find_images
from ..mmdet_runner.specs import COCO_RESULTS_FILE, DETECTIONS_FILE, DRAWN_DIR, InferSpec
from ..models import ModelFiles, resolve_model
from ..records import RecordStore, record_store
from ..records.schema import Kind
from ..resources import MMDetRunner, RunFolders
from .record_lifecycle import bad_input_fails_the_run, cleanup, record_failure, start_record


class DetectConfig(Config):
    images: list[str] = Field(
        description="Image files or folders of images (jpg, png, tif), inside the allowed data folders."
    )
    model: str = Field(
        default="",
        description="A registered model: `name` (latest version) or `name:version`. `detection-pipeline models` lists them.",
    )
    model_config_path: str = Field(
        default="", description="Instead of `model`: an MMDetection config file …"
    )
    checkpoint_path: str = Field(default="", description="… and its checkpoint (.pth).")
    score_threshold: float = Field(
        default=0.3, ge=0.0, le=1.0, description="Detections scoring lower are left out."
    )
    device: str = Field(
        default="cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="`cpu`, `cuda` or `cuda:N`."
    )
    batch_size: int = Field(default=4, ge=1, description="Images per inference batch.")


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
    names_collide = len({image.name for image in images}) < len(images)
    staged = []
    for index, image in enumerate(images):
        target = staging / (f"{index:05d}_{image.name}" if names_collide else image.name)
        try:
            os.symlink(image, target)
        except OSError:
            shutil.copy2(image, target)
        staged.append(str(target))
    return staged


def check_inputs(
    config: DetectConfig, store: RecordStore, roots: tuple[Path, ...]
) -> tuple[ModelFiles, list[Path]]:
    """The model's files and the images; raises InputError. Submission checks the same."""
    model = resolve_model(
        store, roots, config.model, config.model_config_path, config.checkpoint_path
    )
    return model, find_images(config.images, roots)


@op(out=Out(DetectionPlan))
def prepare_inputs(
    context: OpExecutionContext, config: DetectConfig, folders: RunFolders
) -> DetectionPlan:
    """Checks the images and the model, and stages the images in the run's folder."""
    record = start_record(
        context, folders, Kind.DETECTION.value, config.model_dump(), config.model or None
    )
    with bad_input_fails_the_run():
        model, images = check_inputs(config, record_store(context.instance), folders.roots)
    run_dir = folders.run_dir(record.id)
    spec = InferSpec(
        config=str(model.config),
        checkpoint=str(model.checkpoint),
        images=_stage(images, folders.staging_dir(record.id)),
        out_dir=str(run_dir),
        score_threshold=config.score_threshold,
        batch_size=config.batch_size,
        device=config.device,
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
    context: OpExecutionContext, plan: DetectionPlan, runner: MMDetRunner
) -> DetectionPlan:
    """Runs MMDetection inference in a child process."""
    runner.run(context, plan.spec, plan.run_dir, plan.record_id)
    return plan


@op
def collect_detections(context: OpExecutionContext, plan: DetectionPlan) -> int:
    """Reports what was found: counts per class, speed, and where the files are."""
    detections = json.loads((plan.run_dir / DETECTIONS_FILE).read_text())
    per_class = collections.Counter(
        d["class"] for image in detections["images"] for d in image["detections"]
    )
    context.add_output_metadata(
        {
            "images": len(detections["images"]),
            "detections": sum(per_class.values()),
            "seconds": detections["seconds"],
            "images/s": round(len(detections["images"]) / max(detections["seconds"], 1e-9), 2),
            "per class": MetadataValue.json(dict(per_class)),
            "detections.json": MetadataValue.path(str(plan.run_dir / DETECTIONS_FILE)),
            "COCO results": MetadataValue.path(str(plan.run_dir / COCO_RESULTS_FILE)),
            "drawn images": MetadataValue.path(str(plan.run_dir / DRAWN_DIR)),
        }
    )
    return plan.record_id


@job(
    executor_def=in_process_executor,
    hooks={record_failure},
    tags={"detection_pipeline/kind": "detection"},
)
def detect():
    """Detects objects in images with a registered (or given) MMDetection model."""
    plan = prepare_inputs()
    cleanup(
        collect_detections.alias("collect_outputs")(run_inference.alias("run_mmdetection")(plan))
    )
