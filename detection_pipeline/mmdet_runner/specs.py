"""What the parent asks the MMDetection child process to do: one JSON file per action.

The run worker writes the spec into the run's folder and starts the child with its path, so a
run can be repeated from its folder alone (`python -m detection_pipeline.mmdet_runner train
RUN_DIR/train_spec.json`). This module imports nothing heavy: the run worker uses it too.
"""

import dataclasses
import json
from pathlib import Path

TINY_CONFIG = Path(__file__).parent / "configs" / "tiny_retinanet.py"
# The validation metric that picks the epoch whose checkpoint is kept.
BEST_METRIC = "coco/bbox_mAP"

# What the child leaves behind: training in TrainSpec.work_dir, inference in InferSpec.out_dir.
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.py"
CHECKPOINT_FILE = "best.pth"
DRAWN_DIR = "vis"  # drawn images; detections.py names the other outputs
# The run worker's pid, which the child dies with.
RUN_WORKER_PID_ENV = "DETECTION_PIPELINE_RUN_WORKER_PID"


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    work_dir: str
    images_dir: str
    train_annotations: str
    val_annotations: str
    classes: list[str]
    test_annotations: str = ""  # no test metrics without
    base_config: str = str(TINY_CONFIG)
    load_from: str = ""  # a base model's checkpoint to fine-tune; empty: from scratch
    frozen_stages: int | None = None  # None: the base config's
    epochs: int = 30
    learning_rate: float | None = None  # None: the base config's
    batch_size: int = 4
    image_size: int = 128
    seed: int = 0
    device: str = "cpu"

    action = "train"


@dataclasses.dataclass(frozen=True)
class InferSpec:
    config: str
    checkpoint: str
    images: list[str]
    out_dir: str
    score_threshold: float = 0.3
    batch_size: int = 4  # patches per inference batch
    device: str = "cpu"
    # Sliced inference, as in the app this product replaces: images larger than a patch are
    # cut into overlapping patches whose results are merged with NMS at this IoU.
    patch_size: int = 1280
    patch_overlap: float = 0.25
    nms_iou: float = 0.25
    ignore_zones: str = ""  # a GeoJSON of areas whose detections are flagged
    # Written into the outputs (GeoJSON properties), so a file tells which run made it.
    record_id: int = 0
    run_id: str = ""

    action = "infer"


SPEC_TYPES = {spec.action: spec for spec in (TrainSpec, InferSpec)}


def write_spec(spec: TrainSpec | InferSpec, path: Path) -> Path:
    path.write_text(json.dumps(dataclasses.asdict(spec), indent=2))
    return path


def read_spec(action: str, path: Path) -> TrainSpec | InferSpec:
    return SPEC_TYPES[action](**json.loads(Path(path).read_text()))
