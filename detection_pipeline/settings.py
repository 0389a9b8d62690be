"""This product's own settings for one Dagster home: DAGSTER_HOME/detection_pipeline.yaml.

The CLI, the daemon and every run worker read the same file, so they agree on where inputs may
come from, where run folders and models live, how MMDetection is started, how each queue
retries, and what runs on a schedule or from the image inbox.
"""

import sys
import zoneinfo
from pathlib import Path
from typing import Literal

import pydantic
import yaml
from dagster._utils.schedules import is_valid_cron_string
from pydantic import BaseModel, ConfigDict, Field

from .errors import validation_problems

SETTINGS_FILE = "detection_pipeline.yaml"
QUEUE_OF_KIND = {"detection": "detection", "training": "default"}


class SettingsError(ValueError):
    pass


def _real(path: Path) -> Path:
    return Path(path).expanduser().resolve()


class _Section(BaseModel):
    # A misspelt key is an error, not a setting silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Section):
    """How a queue retries a failed run: after base * factor^(n-1) seconds for attempt n."""

    # Attempts in all, the first included: 3 means up to two retries.
    attempts: int = Field(3, ge=1)
    # 120 s doubling gives the 2^n minutes of the system this product replaces.
    delay_seconds: float = Field(120, ge=0)
    backoff_factor: float = Field(2, ge=1)
    # What happens to a run that failed its last attempt: kept as an error, or deleted.
    when_exhausted: Literal["fail", "delete"] = "fail"

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before the next one."""
        return self.delay_seconds * self.backoff_factor ** (attempt - 1)


class QueueSettings(_Section):
    # Dagster's dagster/priority: higher runs first.
    priority: int = 0
    retry: RetryPolicy = RetryPolicy()
    # How long a run may wait for its turn before the alert rule (deploy/prometheus) fires.
    max_wait_seconds: float = Field(3600, gt=0)


# Detection is short and interactive, so it goes before training, as in the system this product
# replaces.
DEFAULT_QUEUES = {"detection": QueueSettings(priority=10), "default": QueueSettings(priority=0)}


class ScheduleSettings(_Section):
    """A recurring run: `params` are what `detect` or `train` take (images/model, dataset/name)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    kind: Literal["detection", "training"]
    # Five fields, as cron has them: "0 3 * * *" is 03:00 every day.
    cron: str
    params: dict
    timezone: str = "UTC"

    @pydantic.field_validator("cron")
    @classmethod
    def _is_cron(cls, cron: str) -> str:
        if not is_valid_cron_string(cron):
            raise ValueError(f"{cron!r} is not a cron string like '0 3 * * *'")
        return cron

    @pydantic.field_validator("timezone")
    @classmethod
    def _is_timezone(cls, timezone: str) -> str:
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {timezone!r}, e.g. 'Europe/Prague'") from error
        return timezone


class InboxSettings(_Section):
    """A folder whose new images become detection runs with `model`."""

    folder: Path
    model: str
    # Images per detection run; more new images than this make several runs.
    max_images_per_run: int = Field(200, ge=1)


class Settings(_Section):
    home: Path
    # Runs may read images and datasets only below these folders (HOME/data and the inbox
    # always included).
    input_roots: tuple[Path, ...] = ()
    # The Python that runs MMDetection (its own virtualenv on a GPU box, say).
    python_executable: str = sys.executable
    # A run's MMDetection work is killed after this long.
    timeout_seconds: int = 6 * 3600
    # Runs' MMDetection children are forked by a warm worker that has torch and MMDetection
    # imported and recent models loaded (seconds faster per run); off, each run starts a new
    # Python. The warm worker stops after this many seconds without work.
    warm_worker: bool = True
    warm_idle_seconds: int = Field(900, ge=1)
    queues: dict[str, QueueSettings] = Field(default_factory=lambda: dict(DEFAULT_QUEUES))
    schedules: tuple[ScheduleSettings, ...] = ()
    inbox: InboxSettings | None = None

    def queue(self, name: str) -> QueueSettings:
        """A queue's settings; a queue taken out of the file keeps working with the defaults."""
        return self.queues.get(name, QueueSettings())

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
        values = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
        try:
            settings = cls(**{**values, "home": Path(home)})
        except pydantic.ValidationError as error:
            raise SettingsError(
                f"{path} is not valid: {validation_problems(error)}; fix the file"
            ) from error
        inbox = settings.inbox and settings.inbox.model_copy(
            update={"folder": _real(settings.inbox.folder)}
        )
        roots = (settings.data_dir, *settings.input_roots, *([inbox.folder] if inbox else []))
        resolved = tuple(dict.fromkeys(map(_real, roots)))
        return settings.model_copy(update={"input_roots": resolved, "inbox": inbox})

    def save(self) -> Path:
        path = self.home / SETTINGS_FILE
        values = self.model_dump(mode="json", exclude={"home"}, exclude_none=True)
        path.write_text(yaml.safe_dump(values, sort_keys=False))
        return path
