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
DETECTIONS_FILE = "detections.json"
COCO_RESULTS_FILE = "detections_coco.json"
DRAWN_DIR = "vis"  # where DetInferencer draws
# The run worker's pid, which the child dies with.
RUN_WORKER_PID_ENV = "DETECTION_PIPELINE_RUN_WORKER_PID"


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    work_dir: str
    images_dir: str
    train_annotations: str
    val_annotations: str
    classes: list[str]
    base_config: str = str(TINY_CONFIG)
    epochs: int = 30
    learning_rate: float = 0.01
    batch_size: int = 2
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
    batch_size: int = 4
    device: str = "cpu"

    action = "infer"


SPEC_TYPES = {spec.action: spec for spec in (TrainSpec, InferSpec)}


def write_spec(spec: TrainSpec | InferSpec, path: Path) -> Path:
    path.write_text(json.dumps(dataclasses.asdict(spec), indent=2))
    return path


def read_spec(action: str, path: Path) -> TrainSpec | InferSpec:
    return SPEC_TYPES[action](**json.loads(Path(path).read_text()))
