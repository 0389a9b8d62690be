"""Which model a run uses: a registered name, `name` or `name:version`."""

import dataclasses
import re
from pathlib import Path

from dagster import AssetKey

from .errors import InputError
from .records import RecordStore

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def model_asset_key(name: str) -> AssetKey:
    """Each registered model's name is an asset in the Dagster UI's catalog (models/NAME): a
    training run materializes its next version there, with its metrics, so people launching a
    detection run can see which models there are."""
    return AssetKey(["models", name])


def check_model_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise InputError(
            f"model name {name!r} is not allowed: use letters, digits, '_', '-', '.' (64 at most)"
        )
    return name


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    label: str
    config: Path
    checkpoint: Path


# Larger versions do not fit the records' integer column (and no registry gets there).
MAX_VERSION = 2**31 - 1


def resolve_model(store: RecordStore, model: str) -> ModelFiles:
    """The files of a registered model, `name` (its latest version) or `name:version`.

    Runs take models from the registry only: a config is a program to mmengine, and the
    registry's are the ones training wrote or `register-model` checked."""
    if not model:
        raise InputError(
            "no model given: name a registered model (`detection-pipeline models` lists them; "
            "`detection-pipeline register-model` adds one trained elsewhere)"
        )
    name, _, version = model.partition(":")
    if not MODEL_NAME.match(name):
        raise InputError(f"unknown model {model!r}: model names are letters, digits, '_', '-', '.'")
    if version and not (
        version.isascii() and version.isdigit() and 0 < int(version) <= MAX_VERSION
    ):
        raise InputError(f"model {model!r}: the version after ':' must be a number, e.g. {name}:2")
    registered = store.find_model(name, int(version) if version else None)
    if registered is None:
        known = sorted({m.name for m in store.list_models()}) or ["none yet: train one first"]
        raise InputError(f"unknown model {model!r}; registered models: {', '.join(known)}")
    files = ModelFiles(
        f"{registered.name}:{registered.version}",
        Path(registered.config),
        Path(registered.checkpoint),
    )
    for what, path in (("config", files.config), ("checkpoint", files.checkpoint)):
        if not path.is_file():
            raise InputError(f"the {what} file of model {files.label} is missing: {path}")
    return files
