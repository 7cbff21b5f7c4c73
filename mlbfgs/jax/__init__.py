"""mL-BFGS for JAX: an optax ``GradientTransformation`` on the pure step.

``mlbfgs(learning_rate, **options)`` takes the options of ``mlbfgs.MLBFGS`` by the same
names; its state is a pytree (``PureState``); ``stats(state)`` reads it on the host.
"""

from ..core.functional import PureBlock, PureState
from .sharded import ShardedState
from .transform import mlbfgs, stats

__all__ = ["PureBlock", "PureState", "ShardedState", "mlbfgs", "stats"]
