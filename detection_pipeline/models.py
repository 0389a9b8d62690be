"""Which model a detection run uses: a registered name (`name` or `name:version`) or files."""

import dataclasses
from pathlib import Path

from dagster import AssetKey

from .datasets.validation import confine
from .errors import InputError
from .records import RecordStore


def model_asset_key(name: str) -> AssetKey:
    """Each registered model's name is an asset in the Dagster UI's catalog (models/NAME): a
    training run materializes its next version there, with its metrics, so people launching a
    detection run can see which models there are."""
    return AssetKey(["models", name])


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    label: str
    config: Path
    checkpoint: Path


def resolve_model(
    store: RecordStore, roots: tuple[Path, ...], model: str, config: str = "", checkpoint: str = ""
) -> ModelFiles:
    """The files of the model; given files must lie in the allowed data folders."""
    if model:
        name, _, version = model.partition(":")
        if version and not version.isdigit():
            raise InputError(
                f"model {model!r}: the version after ':' must be a number, e.g. {name}:2"
            )
        registered = store.find_model(name, int(version) if version else None)
        if registered is None:
            known = sorted({m.name for m in store.list_models()}) or ["none yet: train one first"]
            raise InputError(f"unknown model {model!r}; registered models: {', '.join(known)}")
        label = f"{registered.name}:{registered.version}"
        files = ModelFiles(label, Path(registered.config), Path(registered.checkpoint))
    elif config and checkpoint:
        files = ModelFiles(
            Path(checkpoint).name,
            confine(config, roots, "model config"),
            confine(checkpoint, roots, "checkpoint"),
        )
    else:
        raise InputError(
            "no model given: name a registered model, or give both a config and a checkpoint"
        )
    for what, path in (("config", files.config), ("checkpoint", files.checkpoint)):
        if not path.is_file():
            raise InputError(f"the {what} file of model {files.label} is missing: {path}")
    return files
