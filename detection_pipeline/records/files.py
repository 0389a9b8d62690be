"""Removing a run's folder or a model's files, and nothing else.

The folder to remove is derived from the run id (or model name) and the configured root, never
taken from a record, and a symlink is removed as a link: its target is left alone, whether the
link is the folder itself or something inside it.
"""

import shutil
from pathlib import Path


def _remove_below(root: Path, name: str) -> None:
    path = Path(root) / name
    if path.parent.resolve() != Path(root).resolve() or name in ("", ".", ".."):
        raise ValueError(f"refusing to remove {path}: not a folder directly below {root}")
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)  # unlinks symlinks inside instead of following them


def remove_run_folder(runs_dir: Path, record_id: int) -> None:
    _remove_below(runs_dir, str(int(record_id)))


def remove_model_folder(models_dir: Path, name: str) -> None:
    _remove_below(models_dir, name)
