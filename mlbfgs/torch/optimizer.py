"""``mlbfgs.torch.MLBFGS``: mL-BFGS as a ``torch.optim.Optimizer``.

Each param group gets its own :class:`mlbfgs.MLBFGS` engine, so curvature blocks never
cross groups and every group has its own lr, weight decay and other hyperparameters. The
engine updates the parameters in place through ``p.detach()`` views (no autograd
involvement) and reads ``p.grad``; the group's hyperparameters are read at every step, so
``torch.optim.lr_scheduler`` (which writes ``group["lr"]``) works unchanged.

The engines' state is laid out in ``optimizer.state`` (``mlbfgs.torch.state``), so
torch's own state machinery carries it: ``state_dict`` and its hooks, ``load_state_dict``
with its casting, ``copy.deepcopy``, pickling, ``torch.distributed.checkpoint``.

Missing gradients, as in torch.optim: a parameter whose ``grad`` is ``None`` is not moved
(one process). Its entries of its block count as a zero gradient (plus weight decay) in
the block's curvature statistics and momentum, so its neighbours in the block still step
as before; a param group in which *no* parameter has a gradient is skipped altogether
(its step count does not advance). With a communicator another rank may hold a gradient
for it, so there it moves with its block.

``torch.compile``: the step is excluded from compilation (``torch.compiler.disable``); a
compiled training step breaks its graph there and runs the step eagerly. The step reads
one value back from the device per step (the finiteness certificate) and branches on the
curvature history in Python, and under inductor an in-place average followed by a copy
of it in one graph aliased the copy (every curvature pair was then rejected).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from .. import engine as engine_module
from ..comm import Communicator
from ..core.config import Hyperparameters, MLBFGSConfig, Preset
from ..engine.guard import exclusive
from ..engine.optimizer import NonFinitePolicy
from ..engine.validation import check_lr
from .checks import (
    CONFIG_KEYS,
    STRUCTURAL_KEYS,
    as_float,
    check_saved_groups,
    dense_grad,
    group_inputs,
)
from .dtensor import (
    SHARDS,
    Sharding,
    build_engine,
    local_entries,
    local_grad,
    merge_shards,
    sharded_param_state,
    sharding_of,
)
from .state import engine_state, gather_every_rank, param_state, uncast_state

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["MLBFGS"]


class MLBFGS(torch.optim.Optimizer):
    """Momentum-based, damped, block-diagonal stochastic L-BFGS for torch models.

    With a communicator of several ranks, ``state_dict()`` is a collective (call it on
    every rank) that returns the whole state on every rank, so that rank 0 alone may save
    it and every rank may load it (each adopts the blocks it owns).

    Args:
        params: tensors or param groups, as for any ``torch.optim.Optimizer``; each group
            may set ``lr``, ``blocks``, ``maximize`` and every hyperparameter of its own.
        lr: a float or a one-element tensor (``torch.optim.lr_scheduler`` for schedules).
        blocks, comm, average_grads, on_nonfinite, preset: as for :class:`mlbfgs.MLBFGS`;
            ``blocks`` holds indices within a group; the preset only fills in defaults.
        maximize: ascend instead of descend.
        full_state_dict: ``False`` makes ``state_dict()`` return this rank's blocks only
            and communicate nothing (for per-rank files).
        **hyperparameters: the fields of :class:`mlbfgs.MLBFGSConfig`, the group defaults.

    Raises:
        TypeError, ValueError: a bad argument, named in the message.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float | torch.Tensor = 0.1,
        *,
        blocks: int | list[list[int]] | None = None,
        comm: Communicator | None = None,
        average_grads: bool = True,
        on_nonfinite: NonFinitePolicy = "skip",
        preset: Preset | None = None,
        maximize: bool = False,
        full_state_dict: bool = True,
        **hyperparameters: Unpack[Hyperparameters],
    ) -> None:
        if callable(lr):
            raise TypeError("lr must be a number; use torch.optim.lr_scheduler for schedules")
        check_lr(as_float(lr))
        if not isinstance(maximize, bool) or not isinstance(full_state_dict, bool):
            raise TypeError(
                f"maximize and full_state_dict must be bools, got {maximize!r}, {full_state_dict!r}"
            )
        # The preset fills in the step-control options not given; groups store the result.
        config = MLBFGSConfig.from_preset(preset, **hyperparameters)
        defaults = {
            "lr": lr,
            **{key: getattr(config, key) for key in CONFIG_KEYS},
            "blocks": blocks,
            "maximize": maximize,
        }
        self._comm = comm
        self._average_grads = average_grads
        self._on_nonfinite = on_nonfinite
        self._full_state_dict = full_state_dict
        self._engines: list[engine_module.MLBFGS] = []
        self._shardings: list[Sharding | None] = []  # per group: DTensors' layout
        self._structure: list[dict[str, Any]] = []  # each engine's STRUCTURAL_KEYS values
        super().__init__(params, defaults)
        # Ours run first: later hooks see the whole state, and the engines adopt a loaded
        # state before anything can read it.
        self.register_state_dict_post_hook(_gather_state, prepend=True)
        self.register_load_state_dict_post_hook(_adopt_loaded_state, prepend=True)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (as ``torch.optim.Optimizer`` does) and build its engine."""
        before = len(self.param_groups)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            engine, sharding = self._build_engine(group, before)
        except Exception:
            del self.param_groups[before:]
            raise
        self._engines.append(engine)
        self._shardings.append(sharding)
        self._structure.append(copy.deepcopy({key: group[key] for key in STRUCTURAL_KEYS}))

    def _build_engine(
        self, group: dict[str, Any], index: int
    ) -> tuple[engine_module.MLBFGS, Sharding | None]:
        for i, p in enumerate(group["params"]):
            if not p.is_floating_point():
                raise TypeError(f"param {i} of a group has dtype {p.dtype}; needs floating point")
        options = {
            "lr": check_lr(as_float(group["lr"])),
            "blocks": group["blocks"],
            "on_nonfinite": self._on_nonfinite,
            **{key: group[key] for key in CONFIG_KEYS},
        }
        sharding = sharding_of(group["params"], index, self._comm, group["blocks"])
        if sharding is not None:  # FSDP2 / tensor parallelism: blocks of this rank's shards
            return build_engine(group["params"], sharding, **options), sharding
        params = [p.detach() for p in group["params"]]
        engine = engine_module.MLBFGS(
            params, comm=self._comm, average_grads=self._average_grads, **options
        )
        return engine, None

    # -- the step -------------------------------------------------------------------------

    @torch.compiler.disable  # see the module docstring
    @torch.no_grad()
    @exclusive
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One mL-BFGS step on every group, from the parameters' ``grad``.

        Args:
            closure: re-evaluates the model and returns the loss, as for any torch optimizer.

        Returns:
            The closure's loss, or ``None`` without a closure.

        Raises:
            TypeError, ValueError, RuntimeError: a bad group value, gradient or sparse
                gradient, named by ``param_groups[i]``.
            NonFiniteGradientError: under ``on_nonfinite="raise"``.
            ConcurrentUseError: another thread is inside this optimizer.
            Every group is checked and prepared before any group changes, so after an
            error all of them are as they were.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        inputs = [
            group_inputs(index, group, engine, structure, sharding is not None)
            for index, (group, engine, structure, sharding) in enumerate(
                zip(self.param_groups, self._engines, self._structure, self._shardings, strict=True)
            )
        ]
        # With several ranks every group takes part in every step's collectives, even one
        # whose gradients are all missing on this rank (it then contributes zeros).
        distributed = self._comm is not None and self._comm.size > 1
        prepared = []
        for index, (group, engine) in enumerate(zip(self.param_groups, self._engines, strict=True)):
            if not distributed and all(p.grad is None for p in group["params"]):
                continue
            local = local_grad if self._shardings[index] is not None else dense_grad
            grads: list[torch.Tensor | None] = [
                None if p.grad is None else local(p, index, i)
                for i, p in enumerate(group["params"])
            ]
            if group["maximize"]:
                grads = [None if g is None else torch.neg(g) for g in grads]
            engine.reconfigure(*inputs[index])
            try:
                prepared.append(engine.prepare(grads))
            except (TypeError, ValueError, FloatingPointError) as error:
                raise type(error)(f"param_groups[{index}]: {error}") from None
        for step in prepared:
            step.optimizer.apply(step)
        return loss

    # -- introspection and checkpoints ----------------------------------------------------

    def stats(self) -> list[list[dict[str, Any]]]:
        """What each group's curvature did.

        Returns:
            Per param group, its engine's :meth:`mlbfgs.MLBFGS.stats` (one dict per block).
        """
        return [engine.stats() for engine in self._engines]

    @property
    def engines(self) -> tuple[engine_module.MLBFGS, ...]:
        """The per-group :class:`mlbfgs.MLBFGS` engines (read-only view)."""
        return tuple(self._engines)

    # -- optimizer.state: a view of the engines' state ----------------------------------

    @property
    def state(self) -> defaultdict[torch.Tensor, dict[str, Any]]:
        """torch's per-parameter state, laid out from the engines when read (its tensors
        are views of theirs; see ``mlbfgs.torch.state``)."""
        layout: defaultdict[torch.Tensor, dict[str, Any]] = self.__dict__["_param_state"]
        if self.__dict__.get("_engines"):
            layout.clear()
            for group, engine, sharding in zip(
                self.param_groups, self._engines, self._shardings, strict=True
            ):
                flat = engine.state_dict(copy=False)
                if sharding is None:
                    state = param_state(engine, flat)
                else:
                    state = sharded_param_state(engine, sharding, group["params"], flat)
                for p, entries in zip(group["params"], state, strict=True):
                    if entries:
                        layout[p] = entries
        return layout

    @state.setter
    def state(self, value: defaultdict[torch.Tensor, dict[str, Any]]) -> None:
        self.__dict__["_param_state"] = value

    def __getstate__(self) -> dict[str, Any]:
        if (self._comm is not None and self._comm.size > 1) or any(self._shardings):
            raise TypeError(
                "a distributed mlbfgs.torch.MLBFGS cannot be copied or pickled (each rank "
                "holds only its own blocks); save state_dict() instead"
            )
        state = super().__getstate__()
        state.update(
            _average_grads=self._average_grads,
            _on_nonfinite=self._on_nonfinite,
            _full_state_dict=self._full_state_dict,
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        param_state_ = state.pop("state", defaultdict(dict))
        super().__setstate__(state)
        self.__dict__["_param_state"] = param_state_
        if "_engines" not in self.__dict__:  # unpickled or deep-copied: build the engines
            self._comm = None
            self._engines, self._shardings, self._structure = [], [], []
            for index, group in enumerate(self.param_groups):
                engine, sharding = self._build_engine(group, index)
                self._engines.append(engine)
                self._shardings.append(sharding)
                self._structure.append(copy.deepcopy({k: group[k] for k in STRUCTURAL_KEYS}))
            self._adopt_loaded_state()

    # -- checkpoints ------------------------------------------------------------------------

    @exclusive
    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict``, with the engines' state in ``"state"``.

        Returns:
            ``{"state": ..., "param_groups": ...}`` holding tensors, ints, floats and lists
            only, so ``torch.save`` and ``torch.load(weights_only=True)`` round-trip it and
            ``map_location`` may move it. With several ranks, see the class docstring.
        """
        return super().state_dict()

    def _gather_state(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """state_dict post-hook: with several ranks, every rank's blocks on every rank."""
        first = 0  # the packed index of each group's first parameter
        for group, sharding in zip(self.param_groups, self._shardings, strict=True):
            if sharding is not None:  # its small per-rank state, merged (module dtensor)
                entries = state_dict["state"][first]
                entries[SHARDS] = merge_shards(sharding, entries[SHARDS])
            first += len(group["params"])
        if self._comm is None or self._comm.size == 1 or not self._full_state_dict:
            return state_dict
        state_dict["state"] = gather_every_rank(self._comm, state_dict["state"])
        return state_dict

    @exclusive
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a ``state_dict``, casting tensors to the parameters' dtype and moving
        them to their device, as torch.optim does; except the float32 state of
        half-precision parameters, which is moved only (``mlbfgs.torch.state.uncast_state``).

        Args:
            state_dict: what :meth:`state_dict` returned (with several ranks, the whole
                state, or this rank's blocks with ``full_state_dict=False``).

        Raises:
            KeyError, TypeError, ValueError: a missing key, a group whose structural value
                (``history_size``, ``blocks``, ``history_dtype``, ``h0``) differs, or a value
                that fails the engine's checks, named by ``param_groups[i]``. Everything is
                checked before anything changes: a failed load leaves the optimizer as it was.
        """
        check_saved_groups(self.param_groups, state_dict)
        engines_backup = [engine.state_dict() for engine in self._engines]
        groups_backup = [dict(group) for group in self.param_groups]
        # torch casts every saved tensor to its parameter's dtype: the float32 state of
        # half-precision parameters is taken from state_dict as saved instead.
        self.__dict__["_uncast"] = uncast_state(self.param_groups, state_dict)
        try:
            super().load_state_dict(dict(state_dict))
        except Exception:
            for engine, backup in zip(self._engines, engines_backup, strict=True):
                engine.load_state_dict(backup)
            for group, backup in zip(self.param_groups, groups_backup, strict=False):
                group.clear()
                group.update(backup)
            raise
        finally:
            self.__dict__.pop("_uncast", None)

    def _adopt_loaded_state(self) -> None:
        """load_state_dict post-hook: each engine adopts its group's loaded state."""
        loaded, uncast = self.__dict__["_param_state"], self.__dict__.get("_uncast", {})
        for index, (group, engine) in enumerate(zip(self.param_groups, self._engines, strict=True)):
            try:
                entries = [{**loaded.get(p, {}), **uncast.get(p, {})} for p in group["params"]]
                sharding = self._shardings[index]
                if sharding is not None:
                    entries = local_entries(engine, sharding, entries)
                engine.load_state_dict(engine_state(engine, engine.params, entries))
            except (KeyError, TypeError, ValueError) as error:
                raise type(error)(f"param_groups[{index}]: {error}") from None


def _gather_state(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(optimizer, MLBFGS)
    return optimizer._gather_state(state_dict)


def _adopt_loaded_state(optimizer: torch.optim.Optimizer) -> None:
    assert isinstance(optimizer, MLBFGS)
    optimizer._adopt_loaded_state()
