"""Resources: where runs read and write, and how MMDetection is started."""

import shutil
import sys
from pathlib import Path

from dagster import ConfigurableResource, OpExecutionContext

from .jobs.child_process import run_mmdetection_child
from .mmdet_runner.specs import InferSpec, TrainSpec, write_spec

STAGING_DIR = "staging"


class RunFolders(ConfigurableResource):
    """Run folders, the model registry's files, and the folders inputs may come from."""

    runs_dir: str
    models_dir: str
    input_roots: list[str]

    @property
    def roots(self) -> tuple[Path, ...]:
        return tuple(Path(root).resolve() for root in self.input_roots)

    def run_dir(self, record_id: int) -> Path:
        path = Path(self.runs_dir) / str(record_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def staging_dir(self, record_id: int) -> Path:
        """Inputs prepared for MMDetection; removed when the run ends, outputs stay."""
        return self.run_dir(record_id) / STAGING_DIR

    def remove_staging(self, record_id: int) -> None:
        shutil.rmtree(Path(self.runs_dir) / str(record_id) / STAGING_DIR, ignore_errors=True)

    def model_dir(self, name: str, training_record_id: int) -> Path:
        path = Path(self.models_dir) / name / f"run-{training_record_id}"
        path.mkdir(parents=True, exist_ok=True)
        return path


class MMDetRunner(ConfigurableResource):
    """Runs MMDetection work in a killable child process."""

    python_executable: str = sys.executable
    timeout_seconds: int = 6 * 3600

    def run(
        self,
        context: OpExecutionContext,
        spec: TrainSpec | InferSpec,
        run_dir: Path,
        record_id: int,
    ) -> dict:
        spec_path = write_spec(spec, run_dir / f"{spec.action}_spec.json")
        return run_mmdetection_child(
            context,
            spec,
            spec_path,
            run_dir,
            record_id,
            self.python_executable,
            self.timeout_seconds,
        )
