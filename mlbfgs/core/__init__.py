"""The mathematics of mL-BFGS, written only against the Python array API standard.

Nothing here imports torch, cupy or mpi4py: every function takes its namespace from its
arguments (``array_api_compat.array_namespace``), so the same code runs on NumPy, CuPy,
torch and ``array_api_strict`` arrays.
"""

from .algorithm import BlockState, BlockStats, block_step, skip_step, update_curvature
from .averages import MomentumAverages
from .config import MLBFGSConfig
from .curvature import CurvatureOutcome, curvature_pair, prepare_pair
from .damping import curvature_ratio, damp, damping_tau
from .first_order import apply_weight_decay, heavy_ball, in_warmup
from .history import CurvatureHistory
from .kernels import Kernels
from .partition import balanced_partition, validate_partition
from .preconditioner import CompactForm, compact_form, precondition
from .two_loop import two_loop

__all__ = [
    "BlockState",
    "BlockStats",
    "CompactForm",
    "CurvatureHistory",
    "CurvatureOutcome",
    "Kernels",
    "MLBFGSConfig",
    "MomentumAverages",
    "apply_weight_decay",
    "balanced_partition",
    "block_step",
    "compact_form",
    "curvature_pair",
    "curvature_ratio",
    "damp",
    "damping_tau",
    "heavy_ball",
    "in_warmup",
    "precondition",
    "prepare_pair",
    "skip_step",
    "two_loop",
    "update_curvature",
    "validate_partition",
]
