"""``MLBFGS``: the orchestrator that applies Algorithm 1 to a list of arrays.

It owns no mathematics: it checks inputs, gathers each curvature block into flat
vectors, certifies the gradients finite, calls :func:`mlbfgs.core.algorithm_1` for the
blocks this process owns, and writes the results back into the caller's arrays. On
several ranks :class:`mlbfgs.engine.distributed.BlockExchange` moves the data (one
reduce-scatter and one all-gather per step; docs/design.md section 5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from array_api_compat import device

if TYPE_CHECKING:
    from typing_extensions import Unpack

from ..backends import kernels_for
from ..comm import Communicator, SingleProcessComm
from ..core import (
    BlockInput,
    BlockState,
    CurvatureHistory,
    MLBFGSConfig,
    algorithm_1,
    apply_weight_decay,
    is_boundary,
    skip_step,
)
from ..core.config import Hyperparameters, Preset
from ..core.kernels import state_dtype
from ..core.pieces import Piece, resolve_blocks
from ..core.step_norm import needs_gradient_norm
from ..core.types import Array
from .distributed import BlockExchange, construct_together, fingerprint
from .guard import Guard, exclusive
from .layout import BlockLayout, numel
from .loading import LoadedState, read_state, structure
from .nonfinite import NonFiniteGradientError, certify
from .nonfinite import describe as describe_nonfinite
from .report import block_report, history_bytes
from .shards import ShardExchange
from .state import FORMAT_VERSION, encode_block
from .validation import (
    LearningRate,
    check_grads,
    check_lr,
    check_options,
    check_params,
    history_storage,
    lr_at,
)

__all__ = ["FORMAT_VERSION", "MLBFGS", "NonFiniteGradientError", "PreparedStep"]
NonFinitePolicy = Literal["skip", "raise"]


@dataclass(frozen=True)
class PreparedStep:
    """What ``MLBFGS.prepare`` computed for step ``t``; consumed by ``MLBFGS.apply``."""

    optimizer: MLBFGS
    t: int
    lr: float
    blocks: list[BlockInput]
    finite: list[bool]
    missing: frozenset[int] = frozenset()
    """Parameters whose gradient was ``None``: not written on one process."""


class MLBFGS:
    """Momentum-based, damped, block-diagonal stochastic L-BFGS (Niu et al.): the engine.

    It updates ``params``, a list of arrays of any array-API library, in place at every
    ``step(grads)``. A gradient given as ``None`` counts as zero in its block's statistics,
    and on one process its parameter is not moved (as torch.optim leaves a parameter
    without gradient alone); on several ranks another rank may hold a gradient for it, so
    it moves with its block.

    Args:
        params: the arrays to optimise (one library, real floating point, writable, not
            sharing memory).
        lr: a float >= 0, or a callable ``t -> lr`` of the 1-based step to take.
        blocks: ``None``: element-balanced blocks that are a property of the model, so
            that 1, 2, 4 and 8 ranks run the same optimizer (one block below 16,384
            elements, 8 from 65,536, one per 2^20 beyond 16.8M;
            ``mlbfgs.core.pieces.default_block_count``, docs/design.md section 3). On one
            process they cost little against one block (docs/distributed.md, *Blocks and
            ranks*: within the seeds' spread on the suite's CNNs, each block a few array
            operations more per step); ``1`` keeps one block. With ``sharded``: one block.
            ``k``: k blocks of whole tensors balanced by size; or explicit lists of
            parameter indices or ``(index, start, stop)`` ranges.
        comm: ``None`` (one process) or a :mod:`mlbfgs.comm` communicator.
        average_grads: whether ``step`` averages the gradients over ranks.
        sharded: each rank's ``params`` are its own shards of the model (FSDP2, tensor
            parallelism; ``mlbfgs/engine/shards.py``): its blocks are made of them, it owns
            them all, and ``comm`` only joins the sums of step control and the agreement
            on non-finite gradients; ``average_grads`` must be ``False``.
        on_nonfinite: ``"skip"`` leaves a block whose gradient holds a NaN or infinity
            untouched for the step and counts it in ``stats()``; ``"raise"`` raises
            :class:`NonFiniteGradientError` before anything changes.
        preset: ``None`` (the library defaults), ``"paper"`` (Algorithm 1 as written) or
            ``"released"`` (the authors' released optimizer; docs/algorithm.md): the
            values of the step-control options not given.
        **hyperparameters: the fields of :class:`mlbfgs.MLBFGSConfig` (Table 5 defaults),
            each documented there; ``None`` means the preset's value or the default.

    Raises:
        ValueError, TypeError: a bad argument, named in the message, before anything is
            built; on several ranks ``DistributedSetupError`` when the ranks disagree.
    """

    def __init__(
        self,
        params: Sequence[Array],
        lr: LearningRate = 0.1,
        *,
        blocks: int | Sequence[Sequence[int]] | None = None,
        comm: Communicator | None = None,
        average_grads: bool = True,
        on_nonfinite: NonFinitePolicy = "skip",
        preset: Preset | None = None,
        sharded: bool = False,
        **hyperparameters: Unpack[Hyperparameters],
    ) -> None:
        self._guard = Guard()  # one call at a time (mlbfgs/engine/guard.py)
        if comm is not None and not isinstance(comm, Communicator):
            raise TypeError(f"comm must be None or a mlbfgs.comm communicator, got {comm!r}")
        self.comm: Communicator = comm if comm is not None else SingleProcessComm()

        def build() -> dict[str, Any]:
            self.params, self._xp = check_params(params)
            self.lr = check_lr(lr)
            self.config = MLBFGSConfig.from_preset(preset, **hyperparameters)
            self._history_dtype = history_storage(self._xp, self.config.history_dtype)
            check_options(on_nonfinite, average_grads, sharded)
            self._sharded = sharded
            self.on_nonfinite: NonFinitePolicy = on_nonfinite
            self.average_grads = average_grads
            self._kernels = kernels_for(self._xp)
            self._default_blocks = blocks is None and not sharded  # shards: never adopted
            sizes = [numel(p.shape) for p in self.params]
            # Shards follow the sharding, not the model: one block a rank unless given.
            given = 1 if sharded and blocks is None else blocks
            self._use_partition(resolve_blocks(given, sizes, 1 if sharded else self.comm.size))
            return self._fingerprint()

        # Every rank builds; one small all-gather checks that all agree (never a hang).
        construct_together(self.comm, build)
        self._blocks = {b: self._fresh_block(self.layouts[b]) for b in self.owned}
        self._step = 0

    def reconfigure(self, config: MLBFGSConfig, lr: LearningRate, params: Sequence[Array]) -> None:
        """Take new hyperparameters and fresh views of the same parameters for the next step.

        ``mlbfgs.torch`` calls it before every step with its param group's values (a
        scheduler may have changed them, ``model.to`` may have swapped the storage). The
        caller has checked them: the fields that shape the state (``history_size``,
        ``history_dtype``, ``h0``) and each parameter's shape, dtype and device are as built.
        """
        self.config = self.config if config == self.config else config
        self.lr, self.params = lr, list(params)

    # -- set-up ---------------------------------------------------------------------------

    def _use_partition(self, partition: list[list[Piece]]) -> None:
        """Lay out the blocks and assign them to ranks (contiguous runs, balanced by size)."""
        layouts = [BlockLayout.of(b, pieces, self.params) for b, pieces in enumerate(partition)]
        kind = ShardExchange if self._sharded else BlockExchange
        self._exchange = kind(self.comm, layouts, self.params)

    @property
    def layouts(self) -> list[BlockLayout]:
        """Every block's layout (parameter indices and shapes), in block order."""
        return self._exchange.layouts

    @property
    def owned(self) -> list[int]:
        """The blocks this rank updates (all of them on one process)."""
        return self._exchange.owned

    def _fingerprint(self) -> dict[str, Any]:
        """What every rank must agree on (``distributed.fingerprint``)."""
        settings = {
            "average_grads": self.average_grads,
            "on_nonfinite": self.on_nonfinite,
            "world_size": self.comm.size,
            "sharded": self._sharded,
        }
        return fingerprint(self.config, self.lr, settings, self._xp, self.params, self.layouts)

    @property
    def assignment(self) -> list[list[int]]:
        """For each rank, the blocks it owns."""
        return [list(blocks) for blocks in self._exchange.assignment]

    def history_bytes(self) -> int:
        """Bytes of curvature history (pairs, Gram matrices, scales) held by this rank."""
        return history_bytes(self._xp, self._blocks.values())

    def _fresh_block(self, layout: BlockLayout) -> BlockState:
        first = self.params[layout.indices[0]]
        dtype = self._history_dtype
        if dtype is None:  # float32 for half-precision parameters (core/kernels.py)
            dtype = state_dtype(self._xp, first.dtype)
        history = CurvatureHistory.empty(
            self._xp, self.config.history_size, layout.numel, dtype, device(first)
        )
        return BlockState(history=history)

    # -- the step -------------------------------------------------------------------------

    @property
    def step_count(self) -> int:
        """Steps taken so far; the next ``step`` is step ``step_count + 1``."""
        return self._step

    @exclusive
    def step(self, grads: Sequence[Array | None]) -> None:
        """Apply one mL-BFGS step to ``params`` in place.

        Args:
            grads: one gradient per parameter, of its shape, dtype and device (``None``:
                missing); on several ranks every rank calls ``step`` with its own.

        Raises:
            TypeError, ValueError: gradients that do not match the parameters, or a bad
                ``lr(t)``; nothing changed.
            NonFiniteGradientError: under ``on_nonfinite="raise"``; nothing changed.
            ConcurrentUseError: another thread is inside this optimizer.
        """
        self.apply(self.prepare(grads))

    @exclusive
    def prepare(self, grads: Sequence[Array | None]) -> PreparedStep:
        """Phase 1 of ``step``; changes nothing (only this rank's exchange buffers).

        Checks the gradients and this step's learning rate, takes each owned block's (mean)
        gradient, adds weight decay and computes the first reduction of the step, whose
        finiteness certifies the gradient without an extra pass over it. Under
        ``on_nonfinite="raise"`` a non-finite gradient raises here. Callers that step
        several optimizers together (``mlbfgs.torch``) prepare all of them before applying
        any, so that an error leaves every one unchanged.
        """
        xp, kernels, config = self._xp, self._kernels, self.config
        missing: frozenset[int] = frozenset()
        if isinstance(grads, Sequence) and len(grads) == len(self.params):
            missing = frozenset(i for i, g in enumerate(grads) if g is None)
            grads = [xp.zeros_like(self.params[i]) if g is None else g for i, g in enumerate(grads)]
        checked = check_grads(grads, self.params, xp)
        t = self._step + 1
        lr = lr_at(self.lr, t)
        exchange = self._exchange
        # A pair formed before this step's direction changes the history, and h0="adam"
        # multiplies it with the scaled first moment: the product with the history waits
        # until then, and g^T g certifies the gradient instead.
        history_changes = config.h0 == "adam" or (
            config.pair_timing == "before_step" and is_boundary(t, config)
        )
        blocks, probes = [], []
        for b, g in zip(
            self.owned, exchange.gradients(xp, checked, self.average_grads), strict=True
        ):
            block, layout = self._blocks[b], self.layouts[b]
            theta = layout.gather(xp, self.params)
            if kernels.half(theta.dtype):  # the block's state and step are float32
                theta, g = xp.astype(theta, xp.float32), xp.astype(g, xp.float32)
            g = apply_weight_decay(g, theta, config.weight_decay)
            projection = grad_sq = None
            if block.preconditions(t, config) and not history_changes:
                projection = kernels.project(block.history.pairs, g)
            if projection is None or needs_gradient_norm(config.step_norm):
                grad_sq = kernels.dot(g, g)  # the probe in warm-up; grafting needs it too
            probes.append([p for p in (projection, grad_sq) if p is not None])
            blocks.append(BlockInput(b, block, theta, g, projection, grad_sq))
        finite = certify(self._xp, self._kernels, probes)
        if self.on_nonfinite == "raise":
            bad = exchange.everyone_bad(
                [block.index for block, ok in zip(blocks, finite, strict=True) if not ok]
            )
            if any(bad):  # every rank raises the same message, naming where it came from
                raise NonFiniteGradientError(
                    describe_nonfinite(xp, exchange, checked, bad, self.average_grads)
                )
        return PreparedStep(self, t, lr, blocks, finite, missing)

    @exclusive
    def apply(self, prepared: PreparedStep) -> None:
        """Phase 2 of ``step``: Algorithm 1 for every owned block whose gradient is finite,
        then every block's new parameters reach every rank."""
        if prepared.optimizer is not self or prepared.t != self._step + 1:
            raise ValueError("apply() takes the result of this optimizer's latest prepare()")
        xp, t = self._xp, prepared.t
        stepping = [item for item, ok in zip(prepared.blocks, prepared.finite, strict=True) if ok]
        theta_next = dict(
            zip(
                [item.index for item in stepping],
                algorithm_1(
                    stepping,
                    t,
                    prepared.lr,
                    self.config,
                    self._kernels,
                    lambda values: self._exchange.sum_over_blocks(xp, values),
                ),
                strict=True,
            )
        )
        for item, ok in zip(prepared.blocks, prepared.finite, strict=True):
            if not ok:
                skip_step(item.block, t, self.config)
                theta_next[item.index] = item.theta
        for b, theta in theta_next.items():  # half precision: the one rounding of the step
            dtype = self.params[self.layouts[b].indices[0]].dtype
            if theta.dtype != dtype:
                theta_next[b] = xp.astype(theta, dtype)
        self._exchange.publish(xp, theta_next, self.params, prepared.missing)
        self._step = t

    # -- introspection and checkpoints ----------------------------------------------------

    def stats(self) -> list[dict[str, Any]]:
        """What each block's curvature did, to see whether the preconditioner is working.

        Returns:
            One dict per block this rank owns (``mlbfgs/engine/report.py`` says what each
            key means); warns when a block's parameter average stopped moving.
        """
        return block_report({b: self._blocks[b] for b in self.owned})

    @exclusive
    def state_dict(self, copy: bool = True) -> dict[str, Any]:
        """A snapshot of this rank's blocks, for ``load_state_dict`` to resume exactly.

        Args:
            copy: ``False`` returns the optimizer's own arrays instead of copies (for views
                such as ``mlbfgs.torch``'s ``optimizer.state``).

        Returns:
            A flat ``str -> array | scalar | list of ints`` dict (no pickles): arrays in the
            parameters' own library and device. The learning rate is not included (a
            callable cannot be saved without pickling).
        """
        state: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "step": self._step,
            **structure(self.config.history_size, self.layouts, self.params),
            "owned_blocks": list(self.owned),
        }
        for b in self.owned:
            state.update(encode_block(self._xp, f"block{b}.", self._blocks[b], copy))
        return state

    @exclusive
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict`` (also one read back with ``numpy.load``).

        History length and parameter sizes must match this optimizer, and so must the
        partition, unless this optimizer was built with ``blocks=None``: then it adopts
        the saved blocks (blocks are a property of the model, not of the world size) and
        assigns them to its ranks. Hyperparameters are this optimizer's own.

        Args:
            state: a ``state_dict()`` holding every block this rank owns (on several ranks
                use :func:`mlbfgs.checkpoint.load_sharded`).

        Raises:
            KeyError, TypeError, ValueError: a missing key, or a value that fails its
                checks (finite arrays, integer counters, a valid slot order, positive
                curvature of every stored pair), named in the message. All checks run
                before anything changes, so a failed load leaves the optimizer as it was.
        """
        self.adopt_state(self.check_state(state))

    def check_state(self, state: Mapping[str, Any]) -> LoadedState:
        """Check and decode ``state`` for this rank; changes nothing. With
        :meth:`adopt_state`, a load that several ranks decide together
        (:func:`mlbfgs.checkpoint.load_sharded`)."""
        return read_state(
            state,
            self._exchange,
            self.params,
            self.config.history_size,
            xp=self._xp,
            adopt_partition=self._default_blocks,
            fresh_block=self._fresh_block,
            second_moment=self.config.h0 == "adam",
        )

    def adopt_state(self, loaded: LoadedState) -> None:
        """Make a state :meth:`check_state` returned this optimizer's own (cannot fail)."""
        self._exchange, self._blocks, self._step = loaded.exchange, loaded.blocks, loaded.step
