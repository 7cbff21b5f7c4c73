"""The mathematics of mL-BFGS (Eq 5-7, Algorithms 1 and 2) and its configuration.

Written only against the array API standard, importing nothing else of the package nor
torch, CuPy or mpi4py, so the same code runs on every array library.
"""

from .algorithm import (
    BlockInput,
    BlockState,
    BlockStats,
    algorithm_1,
    block_direction,
    block_update,
    is_boundary,
    skip_step,
    update_curvature,
)
from .averages import MomentumAverages
from .config import PRESETS, Hyperparameters, MLBFGSConfig
from .curvature import CurvatureOutcome, curvature_pair, mix_with_newest, prepare_pair
from .damping import curvature_ratio, damp, damping_tau
from .first_order import apply_weight_decay, heavy_ball, in_warmup
from .history import CurvatureHistory
from .kernels import Kernels
from .partition import balanced_partition
from .preconditioner import CompactForm, compact_form, precondition
from .step_norm import direction_scales
from .two_loop import two_loop

__all__ = [
    "PRESETS",
    "BlockInput",
    "BlockState",
    "BlockStats",
    "CompactForm",
    "CurvatureHistory",
    "CurvatureOutcome",
    "Hyperparameters",
    "Kernels",
    "MLBFGSConfig",
    "MomentumAverages",
    "apply_weight_decay",
    "algorithm_1",
    "balanced_partition",
    "block_direction",
    "block_update",
    "compact_form",
    "curvature_pair",
    "curvature_ratio",
    "damp",
    "damping_tau",
    "direction_scales",
    "heavy_ball",
    "in_warmup",
    "is_boundary",
    "mix_with_newest",
    "precondition",
    "prepare_pair",
    "skip_step",
    "two_loop",
    "update_curvature",
]
