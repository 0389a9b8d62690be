"""This product's own settings for one Dagster home: DAGSTER_HOME/detection_pipeline.yaml.

The CLI, the daemon and every run worker read the same file, so they agree on where inputs may
come from, where run folders and models live, and how MMDetection is started.
"""

import dataclasses
import sys
from pathlib import Path

import yaml

SETTINGS_FILE = "detection_pipeline.yaml"

# Queue name -> priority (Dagster's dagster/priority: higher runs first). Detection is short
# and interactive, so it goes before training, as in the system this product replaces.
DEFAULT_QUEUES = {"detection": 10, "default": 0}
QUEUE_OF_KIND = {"detection": "detection", "training": "default"}


@dataclasses.dataclass(frozen=True)
class Settings:
    home: Path
    # Runs may read images and datasets only below these folders (HOME/data always included).
    input_roots: tuple[Path, ...] = ()
    # The Python that runs MMDetection (its own virtualenv on a GPU box, say).
    python_executable: str = sys.executable
    # A run's MMDetection work is killed after this long.
    timeout_seconds: int = 6 * 3600
    queues: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_QUEUES))

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @classmethod
    def load(cls, home: Path) -> "Settings":
        path = Path(home) / SETTINGS_FILE
        values = yaml.safe_load(path.read_text()) if path.exists() else {}
        settings = cls(home=Path(home), **{k: v for k, v in (values or {}).items()})
        roots = (settings.data_dir, *settings.input_roots)
        resolved = tuple(dict.fromkeys(Path(root).expanduser().resolve() for root in roots))
        return dataclasses.replace(settings, input_roots=resolved)

    def save(self) -> Path:
        path = self.home / SETTINGS_FILE
        values = {
            "input_roots": [str(root) for root in self.input_roots],
            "python_executable": self.python_executable,
            "timeout_seconds": self.timeout_seconds,
            "queues": dict(self.queues),
        }
        path.write_text(yaml.safe_dump(values, sort_keys=False))
        return path
