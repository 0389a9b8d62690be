"""What runs take: the base of the jobs' parameters, and the check every new Dagster run's
config passes before it is stored, whether the CLI, the launchpad, GraphQL, a schedule or the
inbox made it.

Dagster checks a run config's shape when a run is launched, but not the ranges its ops' config
classes declare: those are checked when the op starts, after the config was stored. A NaN
stored that way broke every GraphQL answer that included the run (JSON has no NaN), and the run
then failed as if by chance and was retried. So a run config is refused before it is stored.
"""

import math

from dagster import Config
from pydantic import ConfigDict

from .errors import InputError

# The parts of a run config a user may give: the ops' config. Resources are the settings' and
# execution is the queue's: naming them is refused rather than silently ignored.
USER_SECTIONS = {"ops"}
# Integers beyond what a run can use: refused, so none overflows deep inside MMDetection.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 1024
MAX_IMAGE_SIZE = 16_384  # pixels a side of a training image or a detection patch
MAX_SEED = 2**32 - 1  # numpy's seeds


class RunParams(Config):
    """Parameters of a run: an unknown key, or a number that is not finite, is an error."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _non_finite(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(map(_non_finite, value.values()))
    if isinstance(value, list | tuple):
        return any(map(_non_finite, value))
    return False


def check_run_config(job_name: str, run_config: dict) -> None:
    """Raises InputError unless `run_config` is one a run of `job_name` can be stored with."""
    from .records.service import JOBS, KIND_OF_JOB, parse_params

    if _non_finite(run_config):
        raise InputError(
            "a number in the run config is not finite (NaN or infinity): give a finite one"
        )
    kind = KIND_OF_JOB.get(job_name)
    if kind is None:
        return  # not one of this product's jobs
    unknown = sorted(key for key, value in run_config.items() if value and key not in USER_SECTIONS)
    if unknown:
        raise InputError(
            f"the run config may only hold {', '.join(sorted(USER_SECTIONS))}, not "
            f"{', '.join(unknown)}: the rest comes from the server's settings"
        )
    ops = run_config.get("ops") or {}
    config_op = JOBS[kind].config_op
    others = sorted(set(ops) - {config_op})
    if others:
        raise InputError(f"the {job_name} job takes config for {config_op} only, not {others}")
    parse_params(kind, (ops.get(config_op) or {}).get("config") or {})
