"""Resources: where runs read and write, and how MMDetection is started.

Both are plain objects built from the home's settings, not configurable resources: Dagster lets
a run's config override a configurable resource's fields, and from the launchpad or GraphQL
that would let anyone widen the data roots or choose the program that runs MMDetection.
"""

import dataclasses
import shutil
from pathlib import Path

from dagster import OpExecutionContext

from .jobs.child_process import run_mmdetection_child
from .mmdet_runner.specs import InferSpec, TrainSpec, write_spec

STAGING_DIR = "staging"


@dataclasses.dataclass(frozen=True)
class RunFolders:
    """Run folders, the model registry's files, and the folders inputs may come from."""

    runs_dir: Path
    models_dir: Path
    roots: tuple[Path, ...]

    def run_dir(self, record_id: int) -> Path:
        path = self.runs_dir / str(record_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def staging_dir(self, record_id: int) -> Path:
        """Inputs prepared for MMDetection; removed when the run ends, outputs stay."""
        return self.run_dir(record_id) / STAGING_DIR

    def remove_staging(self, record_id: int) -> None:
        shutil.rmtree(self.runs_dir / str(record_id) / STAGING_DIR, ignore_errors=True)

    def model_dir(self, name: str, training_record_id: int) -> Path:
        path = self.models_dir / name / f"run-{training_record_id}"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclasses.dataclass(frozen=True)
class MMDetRunner:
    """Runs MMDetection work in a killable child process, forked by the warm worker unless
    `warm_worker` is off."""

    python_executable: str
    timeout_seconds: int
    warm_worker: bool
    warm_idle_seconds: int

    def run(
        self,
        context: OpExecutionContext,
        spec: TrainSpec | InferSpec,
        run_dir: Path,
        record_id: int,
    ) -> dict:
        spec_path = write_spec(spec, run_dir / f"{spec.action}_spec.json")
        return run_mmdetection_child(context, self, spec, spec_path, run_dir, record_id)
