"""Lets torch >= 2.6 load mmengine checkpoints without turning `weights_only` off.

mmengine pickles its message hub (HistoryBuffer of numpy arrays) into every checkpoint; torch's
safe loader refuses those classes unless they are allowed one by one.
"""

import builtins

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


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
