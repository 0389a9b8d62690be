"""The train job: prepare_dataset -> run_mmdetection -> collect_outputs -> register_model -> cleanup."""

import base64
import dataclasses
import json
import shutil
from pathlib import Path

from dagster import (
    AssetMaterialization,
    MetadataValue,
    OpExecutionContext,
    Out,
    ResourceParam,
    graph,
    op,
)
from pydantic import Field

from ..datasets.split import split_coco
from ..datasets.validation import dataset_files, load_coco
from ..errors import InputError
from ..mmdet_runner.specs import (
    BEST_METRIC,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    TINY_CONFIG,
    TrainSpec,
)
from ..models import ModelFiles, check_model_name, model_asset_key, resolve_model
from ..params import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_IMAGE_SIZE, MAX_SEED, RunParams
from ..records import RecordStore, record_store
from ..records.schema import Kind
from ..resources import MMDetRunner, RunFolders
from .record_lifecycle import bad_input_fails_the_run, cleanup, start_record
from .training_curve import draw_training_curve

CURVE_FILE = "training_curve.png"


class TrainConfig(RunParams):
    dataset: str = Field(
        description="A dataset folder: annotations.json (COCO) and images/; split 70/20/10 "
        "into train/val/test unless it holds val.json (and optionally test.json) already."
    )
    name: str = Field(
        description="Name to register the trained model under; detection runs use it."
    )
    base_model: str = Field(
        default="",
        description="Fine-tune a registered model (`name` or `name:version`) instead of "
        "training from scratch. Registered models are the assets models/NAME in the Catalog; "
        "`detection-pipeline models` lists them too.",
    )
    frozen_stages: int | None = Field(
        default=None,
        ge=-1,
        le=4,
        description="Backbone stages not trained: -1 none, 0 the stem, N the stem and stages "
        "1..N. Empty: what the base config says (-1 for the tiny default).",
    )
    epochs: int = Field(default=30, ge=1, le=MAX_EPOCHS, description="Training epochs.")
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="Learning rate of the base config's optimizer. Empty: its own rate "
        "(AdamW 0.001 for the tiny default), a tenth of it when fine-tuning.",
    )
    batch_size: int = Field(
        default=4, ge=1, le=MAX_BATCH_SIZE, description="Images per training batch."
    )
    image_size: int = Field(
        default=128, ge=32, le=MAX_IMAGE_SIZE, description="Images are resized to fit this square."
    )
    val_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Share of images for validation (picks the best epoch) when the dataset "
        "has no val.json.",
    )
    test_fraction: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Share of images for the test metrics after training, when the dataset "
        "has no val.json.",
    )
    seed: int = Field(
        default=0, ge=0, le=MAX_SEED, description="Seed of the split and of training."
    )
    device: str = Field(
        default="cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="`cpu`, `cuda` or `cuda:N`."
    )


@dataclasses.dataclass(frozen=True)
class TrainingInputs:
    images_dir: Path
    train: dict
    val: dict
    test: dict | None  # no test metrics without
    classes: list[str]
    base: ModelFiles | None  # None: from scratch


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    record_id: int
    run_dir: Path
    name: str
    base: str | None
    spec: TrainSpec

    @property
    def work_dir(self) -> Path:
        return Path(self.spec.work_dir)


def check_training_inputs(
    config: TrainConfig, store: RecordStore, roots: tuple[Path, ...]
) -> TrainingInputs:
    """The dataset, split as training will use it, and the base model; raises InputError.

    Submission checks the same."""
    check_model_name(config.name)
    if config.val_fraction + config.test_fraction >= 1:
        raise InputError(
            f"val_fraction {config.val_fraction} and test_fraction {config.test_fraction} leave "
            "no images for training: make their sum less than 1"
        )
    base = resolve_model(store, config.base_model) if config.base_model else None
    files = dataset_files(config.dataset, roots)
    coco = load_coco(files.annotations, files.images_dir, roots)
    if files.val:
        train, val = coco, load_coco(files.val, files.images_dir, roots)
        test = load_coco(files.test, files.images_dir, roots) if files.test else None
    else:
        train, val, test = split_coco(coco, config.val_fraction, config.test_fraction, config.seed)
    classes = [c["name"] for c in sorted(coco["categories"], key=lambda category: category["id"])]
    return TrainingInputs(
        files.images_dir, train, val, test if test and test["images"] else None, classes, base
    )


def _write_annotations(staging: Path, parts: dict[str, dict | None]) -> dict[str, str]:
    """Each part's annotations as staging/PART.json; '' for a part there is not."""
    staging.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, coco in parts.items():
        paths[part] = ""
        if coco is not None:
            (staging / f"{part}.json").write_text(json.dumps(coco))
            paths[part] = str(staging / f"{part}.json")
    return paths


@op(out=Out(TrainingPlan))
def prepare_dataset(
    context: OpExecutionContext, config: TrainConfig, folders: ResourceParam[RunFolders]
) -> TrainingPlan:
    """Checks the COCO dataset and the base model, and splits the dataset when it has no split."""
    record = start_record(context, folders, Kind.TRAINING.value, config.model_dump(), config.name)
    with bad_input_fails_the_run():
        inputs = check_training_inputs(config, record_store(context.instance), folders.roots)
    annotations = _write_annotations(
        folders.staging_dir(record.id),
        {"train": inputs.train, "val": inputs.val, "test": inputs.test},
    )
    run_dir = folders.run_dir(record.id)
    spec = TrainSpec(
        work_dir=str(run_dir / "work"),
        images_dir=str(inputs.images_dir),
        train_annotations=annotations["train"],
        val_annotations=annotations["val"],
        test_annotations=annotations["test"],
        classes=inputs.classes,
        base_config=str(inputs.base.config) if inputs.base else str(TINY_CONFIG),
        load_from=str(inputs.base.checkpoint) if inputs.base else "",
        frozen_stages=config.frozen_stages,
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
            "classes": MetadataValue.json(inputs.classes),
            "base model": inputs.base.label if inputs.base else "none (from scratch)",
            "images (train/val/test)": "/".join(
                str(len(part["images"])) if part else "0"
                for part in (inputs.train, inputs.val, inputs.test)
            ),
            "run folder": MetadataValue.path(str(run_dir)),
        }
    )
    base = inputs.base.label if inputs.base else None
    return TrainingPlan(record.id, run_dir, config.name, base, spec)


@op(out=Out(TrainingPlan))
def run_training(
    context: OpExecutionContext, plan: TrainingPlan, runner: ResourceParam[MMDetRunner]
) -> TrainingPlan:
    """Runs mmengine training in a child process."""
    runner.run(context, plan.spec, plan.run_dir, plan.record_id)
    return plan


def _epochs_table(epochs: list[dict]) -> str:
    rows = [
        f"| {e['epoch']} | {e['loss']:.4f} | {e['lr']:.3g} | {e.get(BEST_METRIC, 0.0):.3f} |"
        for e in epochs
    ]
    return "\n".join(["| epoch | loss | learning rate | bbox mAP |", "|---|---|---|---|", *rows])


@op(out=Out(TrainingPlan))
def collect_training(context: OpExecutionContext, plan: TrainingPlan) -> TrainingPlan:
    """Per-epoch metrics, the best epoch and the training curve."""
    metrics = json.loads((plan.work_dir / METRICS_FILE).read_text())
    curve = draw_training_curve(metrics["epochs"], plan.run_dir / CURVE_FILE)
    context.add_output_metadata(
        {
            "best epoch": metrics["best_epoch"],
            "bbox mAP": metrics["bbox_mAP"],
            "test bbox mAP": metrics["test"].get(BEST_METRIC, "no test images"),
            "test metrics": MetadataValue.json(metrics["test"]),
            "epochs": MetadataValue.md(_epochs_table(metrics["epochs"])),
            # The picture itself, inline: the UI shows it on the run's page.
            "training curve": MetadataValue.md(
                f"![training curve](data:image/png;base64,{base64.b64encode(curve.read_bytes()).decode()})"
            ),
            "training curve file": MetadataValue.path(str(curve)),
        }
    )
    return plan


@op
def register_model(
    context: OpExecutionContext, plan: TrainingPlan, folders: ResourceParam[RunFolders]
) -> int:
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
            "test": metrics["test"],
            "epochs": metrics["epochs"],
            "base_model": plan.base,
            "frozen_stages": plan.spec.frozen_stages,
        },
        training_record_id=plan.record_id,
    )
    (plan.work_dir / CHECKPOINT_FILE).unlink()  # the registry's copy is the one detection uses
    metadata = {
        "model": f"{model.name}:{model.version}",
        "version": model.version,
        "classes": ", ".join(model.classes),
        "bbox mAP": metrics["bbox_mAP"],
        "best epoch": metrics["best_epoch"],
        "base model": plan.base or "none (from scratch)",
        "training record id": plan.record_id,
        "checkpoint": MetadataValue.path(model.checkpoint),
    }
    context.log_event(
        AssetMaterialization(
            asset_key=model_asset_key(model.name),
            description=f"detect with `{model.name}` (latest) or `{model.name}:{model.version}`",
            metadata=metadata,
        )
    )
    context.add_output_metadata(metadata)
    return plan.record_id


@graph
def training():
    """Trains an MMDetection model on a COCO dataset and registers it for detection."""
    plan = prepare_dataset()
    cleanup(
        register_model(
            collect_training.alias("collect_outputs")(run_training.alias("run_mmdetection")(plan))
        )
    )
