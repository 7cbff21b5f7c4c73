"""``mlbfgs.torch.MLBFGS``: the engine as a ``torch.optim.Optimizer``, one engine per group.

``optimizer`` adapts param groups, closures, hooks and pickling to the engine; ``state``
lays the engines' state out in ``optimizer.state`` so torch's own machinery carries it.
"""

from .optimizer import MLBFGS

__all__ = ["MLBFGS"]
