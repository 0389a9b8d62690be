"""Lets torch >= 2.6 load mmengine checkpoints without turning `weights_only` off.

mmengine pickles its message hub (HistoryBuffer of numpy arrays) into every checkpoint; torch's
safe loader refuses those classes unless they are allowed one by one.
"""

import builtins
import pickle
from pathlib import Path

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from ..errors import InputError


def allow_mmengine_checkpoints() -> None:
    dtype_classes = [type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32")]
    torch.serialization.add_safe_globals(
        [
            HistoryBuffer,
            np._core.multiarray._reconstruct,
            np._core.multiarray.scalar,
            np.ndarray,
            np.dtype,
            builtins.getattr,
            *dtype_classes,
        ]
    )


def check_checkpoint(path: Path) -> Path:
    """`path`, once torch has loaded it as weights only (the classes above and tensors): a
    checkpoint is a pickle, which could otherwise run any code when loaded."""
    allow_mmengine_checkpoints()
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise InputError(
            f"checkpoint {path} cannot be loaded as weights alone ({str(error).splitlines()[0]}); "
            "save its state_dict with torch.save, or have it trained here"
        ) from error
    return path
