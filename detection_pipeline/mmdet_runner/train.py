"""Training in the child process: mmengine Runner on a TrainSpec, per-epoch metrics to a file."""

import json
import shutil
from pathlib import Path

from mmengine.hooks import Hook
from mmengine.runner import Runner

from .config_builder import build_train_config
from .specs import BEST_METRIC, CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, TrainSpec


class EpochMetricsHook(Hook):
    """Collects the mean training loss, the learning rate and the validation metrics of every
    epoch."""

    priority = "LOW"

    def __init__(self, report):
        self.report = report
        self.epochs: list[dict] = []
        self._losses: list[float] = []
        self._rate = 0.0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._losses.append(float(outputs["loss"].item()))
        # read here: the scheduler hook sets the next epoch's rate before after_train_epoch
        self._rate = runner.optim_wrapper.get_lr()["lr"][0]

    def after_train_epoch(self, runner):
        loss = sum(self._losses) / max(len(self._losses), 1)
        self.epochs.append({"epoch": runner.epoch + 1, "loss": round(loss, 5), "lr": self._rate})
        self._losses = []

    def after_val_epoch(self, runner, metrics=None):
        self.epochs[-1].update({key: float(value) for key, value in (metrics or {}).items()})
        self.report(
            f"epoch {self.epochs[-1]['epoch']}/{runner.max_epochs}: "
            f"loss {self.epochs[-1]['loss']:.4f}, bbox mAP {self.epochs[-1].get(BEST_METRIC, 0):.3f}"
        )


def _test_metrics(runner: Runner, spec: TrainSpec, report) -> dict:
    """The best weights' metrics on the test images; {} when there are none."""
    if not spec.test_annotations:
        report("no test images: no test metrics")
        return {}
    # CocoMetric gives nothing when the model detected nothing: that scores 0.
    metrics = {BEST_METRIC: 0.0, **{key: float(value) for key, value in runner.test().items()}}
    report(f"test: bbox mAP {metrics[BEST_METRIC]:.3f}")
    return metrics


def train(spec: TrainSpec, report) -> dict:
    """Trains, then leaves config.py, best.pth and metrics.json in spec.work_dir.

    The checkpoint hook keeps only the best epoch's weights (by bbox mAP on the validation
    images), deleting the one it beats; those weights are then scored on the test images."""
    work_dir = Path(spec.work_dir)
    cfg = build_train_config(spec)
    runner = Runner.from_cfg(cfg)
    metrics_hook = EpochMetricsHook(report)
    runner.register_hook(metrics_hook)
    runner.train()

    best_checkpoints = sorted(work_dir.glob("best_*.pth"))
    if best_checkpoints:
        best = max(metrics_hook.epochs, key=lambda epoch: epoch.get(BEST_METRIC, -1.0))
        shutil.move(best_checkpoints[-1], work_dir / CHECKPOINT_FILE)
        runner.load_checkpoint(str(work_dir / CHECKPOINT_FILE))
    else:
        # No epoch produced a detection to score (a short first training does that): the
        # last weights are the best there is.
        report("no epoch scored a bbox mAP; keeping the last epoch's weights")
        best = metrics_hook.epochs[-1]
        runner.save_checkpoint(
            str(work_dir), CHECKPOINT_FILE, save_optimizer=False, save_param_scheduler=False
        )
    test_metrics = _test_metrics(runner, spec, report)
    cfg.dump(str(work_dir / CONFIG_FILE))
    summary = {
        "epochs": metrics_hook.epochs,
        "best_epoch": best["epoch"],
        "bbox_mAP": best.get(BEST_METRIC, 0.0),
        "test": test_metrics,
        "classes": list(spec.classes),
        "config": str(work_dir / CONFIG_FILE),
        "checkpoint": str(work_dir / CHECKPOINT_FILE),
    }
    (work_dir / METRICS_FILE).write_text(json.dumps(summary, indent=2))
    return summary
