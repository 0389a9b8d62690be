"""The Dagster home (DAGSTER_HOME) this product runs in, and its instance config."""

import functools
import os
from pathlib import Path

import yaml
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import deserialize_value

DEFAULT_HOME = Path("~/.detection_pipeline")
DEPLOYMENT_CONFIG = Path(__file__).parent / "dagster.yaml"


def dagster_home() -> Path:
    """$DAGSTER_HOME, or ~/.detection_pipeline when it is unset."""
    return Path(os.environ.get("DAGSTER_HOME") or DEFAULT_HOME).expanduser().resolve()


def use_home(home: Path) -> Path:
    """Makes `home` the DAGSTER_HOME of this process and of every process it starts."""
    home = Path(home).expanduser().resolve()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)  # records and outputs: the user's alone
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def instance_config(home: Path, postgres_url: str | None = None) -> dict:
    """The deployment config with its storage pointed at SQLite in `home` or at `postgres_url`,
    and what runs print kept in `home`."""
    config = yaml.safe_load(DEPLOYMENT_CONFIG.read_text())
    if postgres_url:
        config["storage"]["custom"]["config"]["postgres_url"] = postgres_url
    else:
        config["storage"] = {
            "custom": {
                "module": "detection_pipeline.instance.pooled_sqlite",
                "class": "PooledSqliteStorage",
                "config": {"base_dir": str(home / "storage")},
            }
        }
    config["compute_logs"]["config"] = {"base_dir": str(home / "storage")}
    return config


def write_instance_config(home: Path, postgres_url: str | None = None) -> Path:
    path = home / "dagster.yaml"
    header = (
        "# Written by `detection-pipeline init` from detection_pipeline/instance/dagster.yaml.\n"
    )
    path.write_text(header + yaml.safe_dump(instance_config(home, postgres_url), sort_keys=False))
    return path


@functools.cache
def opened_instance(serialized_ref: str) -> DagsterInstance:
    """The instance of a serialized InstanceRef, opened once per process: opening one checks its
    storage's schema (40-200 ms)."""
    return DagsterInstance.from_ref(deserialize_value(serialized_ref, InstanceRef))
