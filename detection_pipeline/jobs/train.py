"""The train job: prepare_dataset -> run_mmdetection -> collect_outputs -> register_model -> cleanup."""

import dataclasses
import json
import re
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

from ..datasets.split import split_coco
from ..datasets.validation import dataset_files, load_coco
from ..errors import InputError
from ..mmdet_runner.specs import BEST_METRIC, CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, TrainSpec
from ..records import record_store
from ..records.schema import Kind
from ..resources import MMDetRunner, RunFolders
from .record_lifecycle import bad_input_fails_the_run, cleanup, record_failure, start_record
from .training_curve import draw_training_curve

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CURVE_FILE = "training_curve.png"


class TrainConfig(Config):
    dataset: str = Field(
        description="A dataset folder: annotations.json (COCO), images/, optional val.json."
    )
    name: str = Field(
        description="Name to register the trained model under; detection runs use it."
    )
    epochs: int = Field(default=30, ge=1, description="Training epochs.")
    learning_rate: float = Field(default=0.01, gt=0, description="SGD learning rate.")
    batch_size: int = Field(default=2, ge=1, description="Images per training batch.")
    image_size: int = Field(
        default=128, ge=32, description="Images are resized to fit this square."
    )
    val_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Share of images kept for validation when the dataset has no val.json.",
    )
    seed: int = Field(default=0, description="Seed of the split and of training.")
    device: str = Field(
        default="cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="`cpu`, `cuda` or `cuda:N`."
    )


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    record_id: int
    run_dir: Path
    name: str
    spec: TrainSpec

    @property
    def work_dir(self) -> Path:
        return Path(self.spec.work_dir)


def check_dataset(config: TrainConfig, roots: tuple[Path, ...]) -> tuple[Path, dict, dict | None]:
    """(images folder, annotations, validation annotations or None); raises InputError.

    Submission checks the same."""
    if not MODEL_NAME.match(config.name):
        raise InputError(
            f"model name {config.name!r} is not allowed: use letters, digits, '_', '-', '.' (64 at most)"
        )
    annotations, images_dir, val_annotations = dataset_files(config.dataset, roots)
    coco = load_coco(annotations, images_dir)
    return images_dir, coco, load_coco(val_annotations, images_dir) if val_annotations else None


def _write_split(
    config: TrainConfig, staging: Path, roots: tuple[Path, ...]
) -> tuple[Path, Path, Path, list[str]]:
    """(images folder, train annotations, val annotations, classes) with the annotations in staging."""
    images_dir, coco, val = check_dataset(config, roots)
    train = coco
    if val is None:
        train, val = split_coco(coco, config.val_fraction, config.seed)
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "train.json").write_text(json.dumps(train))
    (staging / "val.json").write_text(json.dumps(val))
    classes = [c["name"] for c in sorted(coco["categories"], key=lambda category: category["id"])]
    return images_dir, staging / "train.json", staging / "val.json", classes


@op(out=Out(TrainingPlan))
def prepare_dataset(
    context: OpExecutionContext, config: TrainConfig, folders: RunFolders
) -> TrainingPlan:
    """Checks the COCO dataset and splits it into training and validation when it has no split."""
    record = start_record(context, folders, Kind.TRAINING.value, config.model_dump(), config.name)
    with bad_input_fails_the_run():
        images_dir, train, val, classes = _write_split(
            config, folders.staging_dir(record.id), folders.roots
        )
    run_dir = folders.run_dir(record.id)
    spec = TrainSpec(
        work_dir=str(run_dir / "work"),
        images_dir=str(images_dir),
        train_annotations=str(train),
        val_annotations=str(val),
        classes=classes,
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        batch_size=config.batch_size,
        image_size=config.image_size,
        seed=config.seed,
        device=config.device,
    )
    context.add_output_metadata(
        {
            "record id": record.id,
            "classes": MetadataValue.json(classes),
            "run folder": MetadataValue.path(str(run_dir)),
        }
    )
    return TrainingPlan(record.id, run_dir, config.name, spec)


@op(out=Out(TrainingPlan))
def run_training(
    context: OpExecutionContext, plan: TrainingPlan, runner: MMDetRunner
) -> TrainingPlan:
    """Runs mmengine training in a child process."""
    runner.run(context, plan.spec, plan.run_dir, plan.record_id)
    return plan


def _epochs_table(epochs: list[dict]) -> str:
    rows = [f"| {e['epoch']} | {e['loss']:.4f} | {e.get(BEST_METRIC, 0.0):.3f} |" for e in epochs]
    return "\n".join(["| epoch | loss | bbox mAP |", "|---|---|---|", *rows])


@op(out=Out(TrainingPlan))
def collect_training(context: OpExecutionContext, plan: TrainingPlan) -> TrainingPlan:
    """Per-epoch metrics, the best epoch and the training curve."""
    metrics = json.loads((plan.work_dir / METRICS_FILE).read_text())
    curve = draw_training_curve(metrics["epochs"], plan.run_dir / CURVE_FILE)
    context.add_output_metadata(
        {
            "best epoch": metrics["best_epoch"],
            "bbox mAP": metrics["bbox_mAP"],
            "epochs": MetadataValue.md(_epochs_table(metrics["epochs"])),
            "training curve": MetadataValue.path(str(curve)),
        }
    )
    return plan


@op
def register_model(context: OpExecutionContext, plan: TrainingPlan, folders: RunFolders) -> int:
    """Stores the best checkpoint and its config as the next version of the model's name."""
    metrics = json.loads((plan.work_dir / METRICS_FILE).read_text())
    store = record_store(context.instance)
    # Named by the training run, not the version: two trainings of one name may finish together.
    model_dir = folders.model_dir(plan.name, plan.record_id)
    shutil.copy2(plan.work_dir / CONFIG_FILE, model_dir / CONFIG_FILE)
    shutil.copy2(plan.work_dir / CHECKPOINT_FILE, model_dir / CHECKPOINT_FILE)
    model = store.register_model(
        plan.name,
        classes=metrics["classes"],
        config=str(model_dir / CONFIG_FILE),
        checkpoint=str(model_dir / CHECKPOINT_FILE),
        metrics={
            "best_epoch": metrics["best_epoch"],
            "bbox_mAP": metrics["bbox_mAP"],
            "epochs": metrics["epochs"],
        },
        training_record_id=plan.record_id,
    )
    (plan.work_dir / CHECKPOINT_FILE).unlink()  # the registry's copy is the one detection uses
    context.add_output_metadata(
        {
            "model": f"{model.name}:{model.version}",
            "checkpoint": MetadataValue.path(model.checkpoint),
        }
    )
    return plan.record_id


@job(
    executor_def=in_process_executor,
    hooks={record_failure},
    tags={"detection_pipeline/kind": "training"},
)
def train():
    """Trains an MMDetection model on a COCO dataset and registers it for detection."""
    plan = prepare_dataset()
    cleanup(
        register_model(
            collect_training.alias("collect_outputs")(run_training.alias("run_mmdetection")(plan))
        )
    )
