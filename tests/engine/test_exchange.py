"""``BlockExchange`` (``mlbfgs/engine/distributed.py``) on its own: which blocks a rank
owns, the mean gradient of each (one reduce-scatter), the new parameters on every rank
(one all-gather) and the per-block sum, on one process and on ranks that are threads
(``tests/support/thread_world.py``), against plain NumPy in the same order of operations,
so bitwise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from thread_world import ThreadComm, run_world

from mlbfgs.comm import SingleProcessComm
from mlbfgs.engine.distributed import BlockExchange
from mlbfgs.engine.layout import BlockLayout

SHAPES = [(3, 2), (5,), (4,), (2, 2)]
# Block 1 takes the end of params[0] and all of params[1]: a tensor split across blocks.
BLOCKS = [[(0, 0, 4)], [(0, 4, 6), (1, 0, 5)], [(2, 0, 4)], [(3, 0, 4)]]


def arrays(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for shape in SHAPES]


def flat(values: list[np.ndarray], b: int) -> np.ndarray:
    """Block b of ``values`` as one vector, by plain slicing."""
    return np.concatenate([values[i].reshape(-1)[start:stop] for i, start, stop in BLOCKS[b]])


def exchange(comm: Any, params: list[np.ndarray]) -> BlockExchange:
    layouts = [BlockLayout.of(b, pieces, params) for b, pieces in enumerate(BLOCKS)]
    return BlockExchange(comm, layouts, params)


def test_one_process_owns_every_block_and_writes_them_back() -> None:
    params, grads = arrays(0), arrays(1)
    ex = exchange(SingleProcessComm(), params)
    assert ex.owned == [0, 1, 2, 3] and not ex.distributed
    for b, g in zip(ex.owned, ex.gradients(np, grads, average=True), strict=True):
        np.testing.assert_array_equal(g, flat(grads, b))
    new = {b: np.full(len(flat(params, b)), float(b + 1)) for b in ex.owned}
    kept = params[2].copy()
    ex.publish(np, new, params, keep={2})  # a parameter without a gradient stays
    np.testing.assert_array_equal(params[0].reshape(-1), [1.0] * 4 + [2.0] * 2)
    np.testing.assert_array_equal(params[1], [2.0] * 5)
    np.testing.assert_array_equal(params[2], kept)
    np.testing.assert_array_equal(params[3], np.full((2, 2), 4.0))
    total = ex.sum_over_blocks(np, {0: np.float64(0.5), 3: np.float64(0.25)})
    assert float(total) == 0.75  # an absent block counts as zero


def rank_step(comm: ThreadComm) -> dict[str, Any]:
    """One rank's step through the exchange: its gradients are the base ones plus its rank."""
    params = arrays(0)
    grads = [g + comm.rank for g in arrays(1)]
    ex = exchange(comm, params)
    local = ex.gradients(np, grads, average=False)
    after_local = comm.calls["reduce_scatter"]
    mean = ex.gradients(np, grads, average=True)
    new = {b: np.arange(len(flat(params, b)), dtype=np.float64) + 10.0 * b for b in ex.owned}
    ex.publish(np, new, params)
    values = {b: np.float64(0.1 * (b + 1)) for b in ex.owned}
    total = ex.sum_over_blocks(np, values)
    return {
        "owned": ex.owned,
        "local": local,
        "mean": mean,
        "params": params,
        "total": total,
        "reduce_scatters": (after_local, comm.calls["reduce_scatter"]),
        "allgathervs": comm.calls["allgatherv"],
    }


@pytest.mark.parametrize("ranks", [2, 3, 5])  # 5 ranks for 4 blocks: one owns none
def test_ranks_average_gradients_and_every_rank_gets_every_block(ranks: int) -> None:
    results = run_world(ranks, rank_step)
    owned = [b for r in results for b in r["owned"]]
    assert owned == [0, 1, 2, 3]  # each block on one rank, contiguous, in order
    assert sum(not r["owned"] for r in results) == max(0, ranks - 4)
    base = arrays(1)
    for rank, result in enumerate(results):
        for b, local, mean in zip(result["owned"], result["local"], result["mean"], strict=True):
            np.testing.assert_array_equal(local, flat([g + rank for g in base], b))
            want = flat(base, b)  # g_0 + g_1 + ... in rank order, then divided by the ranks
            for other in range(1, ranks):
                want = want + flat([g + other for g in base], b)
            np.testing.assert_array_equal(mean, want / ranks)
        for b in range(4):  # every block, whichever rank owns it
            published = np.arange(len(flat(base, b)), dtype=np.float64) + 10.0 * b
            np.testing.assert_array_equal(flat(result["params"], b), published)
    # one reduce-scatter only where gradients are averaged; one all-gather for the
    # parameters and one for the per-block sum
    assert all(r["reduce_scatters"] == (0, 1) and r["allgathervs"] == 2 for r in results)
    block_sum = np.sum(np.asarray([0.1 * (b + 1) for b in range(4)]))
    assert all(r["total"] == block_sum for r in results)  # bitwise, on every rank


def test_several_ranks_refuse_mixed_dtypes_by_name() -> None:
    def body(comm: ThreadComm) -> str:
        params = arrays(0)
        params[2] = params[2].astype(np.float32)
        layouts = [BlockLayout.whole([i], params) for i in range(len(params))]
        with pytest.raises(ValueError, match=r"params\[2\] has dtype float32") as error:
            BlockExchange(comm, layouts, params)
        return str(error.value)

    assert all("one flat vector" in message for message in run_world(2, body))
    params = arrays(0)
    params[2] = params[2].astype(np.float32)  # one process exchanges nothing: accepted
    BlockExchange(SingleProcessComm(), [BlockLayout.whole([i], params) for i in range(4)], params)
