"""``mlbfgs.torch.MLBFGS`` against the generic checks torch applies to its own optimizers.

torch tests every optimizer of ``torch.optim`` with the same battery (its
``OptimizerInfo``-driven tests); these are those checks, written again for this optimizer,
plus the tools that walk ``optimizer.state``: deepcopy, pickle, ``torch.save(opt)``,
``torch.distributed.checkpoint``'s state-dict helpers, state-dict hooks, casting on load,
``torch.compile``. Checks that do not apply (fused and foreach kernels, sparse and complex
gradients, capturable CUDA graphs) are listed in docs/backends.md with the reason.
"""

from __future__ import annotations

import copy
import io
import pickle
from typing import Any

import pytest
from torch_cases import HYPER, assert_same, batches, loss_of, make_model, train

torch = pytest.importorskip("torch")

import mlbfgs.torch as mt  # noqa: E402


def trained(steps: int = 8, **options: Any) -> tuple[Any, Any]:
    model = make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.05, **{**HYPER, **options})
    train(model, opt, batches(steps))
    return model, opt


def assert_same_state(a: Any, b: Any) -> None:
    """Equal nested state dicts: tensors bitwise, everything else by ==."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif torch.is_tensor(a):
        assert torch.equal(a, b)
    else:
        assert a == b or (a != a and b != b)  # NaN == NaN here


def continue_both(a: tuple[Any, Any], b: tuple[Any, Any], steps: int = 8) -> None:
    """Train two (model, optimizer) pairs on the same later batches; they must agree."""
    data = batches(8 + steps)[8:]
    train(*a, data)
    train(*b, data)
    assert_same(a[0], b[0])


# -- optimizer.state ----------------------------------------------------------------------


def test_every_parameter_has_state_from_the_start() -> None:
    model = make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.05, **HYPER)
    first = next(iter(model.parameters()))
    assert opt.state[first]["group.step"] == 0 and "block.history.pairs" in opt.state[first]
    train(model, opt, batches(3))
    assert all(opt.state[p] for p in model.parameters())  # torch's test_non_empty_state
    assert opt.state[first]["group.step"] == 3


def test_state_tensors_are_views_of_the_engine() -> None:
    model, opt = trained()
    first = next(iter(model.parameters()))
    buffer = opt.state[first]["momentum_buffer"]
    assert buffer.shape == first.shape
    buffer.zero_()  # a tool that edits optimizer.state in place edits the optimizer
    assert torch.count_nonzero(opt.engines[0].state_dict()["block0.momentum_buffer"]) < (
        sum(p.numel() for p in model.parameters())
    )


# -- copies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how", ["deepcopy", "pickle", "torch.save"], ids=["deepcopy", "pickle", "torch.save"]
)
def test_copies_step_like_the_original(how: str) -> None:
    """deepcopy / pickle / torch.save of a model and its optimizer together (as EMA, SWA
    and checkpointing tools do): the copy continues bitwise like the original."""
    model, opt = trained()
    bundle = {"model": model, "opt": opt}
    if how == "deepcopy":
        twin = copy.deepcopy(bundle)
    elif how == "pickle":
        twin = pickle.loads(pickle.dumps(bundle))
    else:
        buffer = io.BytesIO()
        torch.save(bundle, buffer)
        buffer.seek(0)
        twin = torch.load(buffer, weights_only=False)
    assert twin["opt"].engines[0].step_count == opt.engines[0].step_count
    public = {k for k in vars(opt) if not k.startswith("_")}
    assert public == {k for k in vars(twin["opt"]) if not k.startswith("_")}
    continue_both((model, opt), (twin["model"], twin["opt"]))


# -- state dicts --------------------------------------------------------------------------


def test_state_dict_round_trip_with_weights_only_and_determinism() -> None:
    """torch's test_state_dict_deterministic and test_save_load_equality_with_weights_only:
    a fresh optimizer on equal (not identical) parameters loads the state, gives an equal
    state dict, and the two continue identically; the saved dict is not modified."""
    model, opt = trained()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    reference = copy.deepcopy(saved)
    twin = make_model(seed=7)
    twin.load_state_dict(model.state_dict())
    opt2 = mt.MLBFGS(twin.parameters(), lr=0.05, **HYPER)
    opt2.load_state_dict(saved)
    assert_same_state(opt2.state_dict(), opt.state_dict())
    assert_same_state(saved, reference)
    continue_both((model, opt), (twin, opt2))


def test_a_group_without_a_structural_key_is_refused() -> None:
    """Only state dicts of this format load (FORMAT_VERSION 1, the first released)."""
    model, opt = trained()
    old = opt.state_dict()
    del old["param_groups"][0]["history_dtype"]
    twin = make_model(seed=7)
    opt2 = mt.MLBFGS(twin.parameters(), lr=0.05, **HYPER)
    with pytest.raises(KeyError, match="has no 'history_dtype'"):
        opt2.load_state_dict(old)


def test_float32_state_loads_into_a_float64_model() -> None:
    """Casting on load, as torch.optim does: every tensor takes the parameter's dtype (the
    float64 Gram matrices are lists, so they keep every bit)."""
    model, opt = trained()
    wide = make_model(dtype=torch.float64)
    wide.load_state_dict(model.state_dict())
    opt64 = mt.MLBFGS(wide.parameters(), lr=0.05, **HYPER)
    opt64.load_state_dict(opt.state_dict())
    dtypes = {v.dtype for s in opt64.state.values() for v in s.values() if torch.is_tensor(v)}
    assert dtypes == {torch.float64}
    narrow, wide_state = opt.engines[0].state_dict(), opt64.engines[0].state_dict()
    for key, value in narrow.items():
        if torch.is_tensor(value):
            assert torch.equal(wide_state[key], value.double()), key
    train(wide, opt64, batches(12, dtype=torch.float64)[8:])
    assert all(torch.isfinite(p).all() for p in wide.parameters())


def test_state_dict_and_load_hooks_see_the_engine_state() -> None:
    model, opt = trained()
    seen: list[str] = []

    def post(optimizer: Any, state_dict: dict[str, Any]) -> None:
        seen.append("post")
        assert "block.history.pairs" in state_dict["state"][0]

    def load_pre(optimizer: Any, state_dict: dict[str, Any]) -> None:
        seen.append("load_pre")

    def load_post(optimizer: Any) -> None:
        seen.append("load_post")
        assert optimizer.engines[0].step_count == 8  # already adopted

    opt.register_state_dict_post_hook(post)
    opt.register_load_state_dict_pre_hook(load_pre)
    opt.register_load_state_dict_post_hook(load_post)
    saved = copy.deepcopy(opt.state_dict())
    train(model, opt, batches(2))
    opt.load_state_dict(saved)
    assert seen == ["post", "load_pre", "load_post"]


def test_distributed_checkpoint_helpers_round_trip() -> None:
    """torch.distributed.checkpoint.state_dict's get/set_optimizer_state_dict (what FSDP2
    and DCP users call) carry the whole state, and the loaded optimizer continues bitwise."""
    dcp = pytest.importorskip("torch.distributed.checkpoint.state_dict")
    model, opt = trained()
    saved = copy.deepcopy(dcp.get_optimizer_state_dict(model, opt))
    assert any("block.history.pairs" in entries for entries in saved["state"].values())
    twin = make_model(seed=7)
    twin.load_state_dict(model.state_dict())
    opt2 = mt.MLBFGS(twin.parameters(), lr=0.05, **HYPER)
    dcp.set_optimizer_state_dict(twin, opt2, saved)
    assert opt2.engines[0].step_count == 8
    continue_both((model, opt), (twin, opt2))


SPLIT = [[[0, 0, 12]], [[0, 12, 30], 1], [2, 3]]  # block 1 starts inside param 0


@pytest.mark.parametrize(
    ("steps", "options"),
    [
        (8, {}),
        (1, {}),  # no snapshot yet
        (0, {}),  # nothing but the history
        (8, {"momentum": 0.0}),  # never a heavy-ball buffer
        (8, {"h0": "adam"}),  # second_moment
        (8, {"blocks": SPLIT}),  # a parameter split across blocks
    ],
    ids=["steps8", "steps1", "steps0", "momentum0", "adam", "split"],
)
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")  # one process
def test_dcp_save_and_load_into_a_fresh_optimizer_continues_bitwise(
    steps: int, options: dict[str, Any], tmp_path: Any
) -> None:
    """The DCP resume users write (get_optimizer_state_dict, dcp.save; a fresh model and
    optimizer; dcp.load into their state dicts, set_optimizer_state_dict), on one process
    without a process group: DCP fills only the keys the fresh optimizer lays out, so
    every entry must be there from the start. (Before, set_optimizer_state_dict raised
    "Missing optimizer state for parameter '0.bias'", and with strict=False the averages
    and heavy-ball buffer were silently dropped.)"""
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    helpers = pytest.importorskip("torch.distributed.checkpoint.state_dict")
    hyper = {**HYPER, **options}
    data = batches(steps + 8)
    model = make_model()
    opt = mt.MLBFGS(model.parameters(), lr=0.05, **hyper)
    train(model, opt, data[:steps])
    saved = {
        "model": helpers.get_model_state_dict(model),
        "optim": helpers.get_optimizer_state_dict(model, opt),
    }
    dcp.save(saved, checkpoint_id=str(tmp_path))
    expected = opt.engines[0].state_dict()  # copies
    train(model, opt, data[steps:])  # the run that never stopped
    twin = make_model(seed=7)
    opt2 = mt.MLBFGS(twin.parameters(), lr=0.05, **hyper)
    loaded = {
        "model": helpers.get_model_state_dict(twin),
        "optim": helpers.get_optimizer_state_dict(twin, opt2),
    }
    dcp.load(loaded, checkpoint_id=str(tmp_path))
    helpers.set_model_state_dict(twin, loaded["model"])
    helpers.set_optimizer_state_dict(twin, opt2, loaded["optim"])
    assert opt2.engines[0].step_count == steps
    assert_same_state(opt2.engines[0].state_dict(), expected)
    train(twin, opt2, data[steps:])
    assert_same(model, twin)


def test_a_state_dict_without_block_present_still_loads() -> None:
    """State dicts saved before ``block.present`` (absent vectors absent, no zeros) load
    by what they hold."""
    model, opt = trained(steps=1, momentum=0.0)  # no snapshot, no heavy-ball buffer
    saved = copy.deepcopy(opt.state_dict())
    absent = {"averages.snapshot_theta", "averages.snapshot_grad", "momentum_buffer"}
    for entries in saved["state"].values():
        assert entries.pop("block.present", None) in (None, [0, 1])
        for name in absent:
            assert not entries.pop(name).any()  # the placeholders
    twin = make_model(seed=7)
    twin.load_state_dict(model.state_dict())
    opt2 = mt.MLBFGS(twin.parameters(), lr=0.05, **{**HYPER, "momentum": 0.0})
    opt2.load_state_dict(saved)
    assert_same_state(opt2.engines[0].state_dict(), opt.engines[0].state_dict())
    continue_both((model, opt), (twin, opt2))


# -- the step -----------------------------------------------------------------------------


def test_step_is_a_noop_when_no_parameter_has_a_gradient() -> None:
    model, opt = trained()
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad(set_to_none=True)
    opt.step()
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert opt.engines[0].step_count == 8


def test_step_hooks_run_around_the_step() -> None:
    model, opt = trained(steps=1)
    order: list[str] = []
    opt.register_step_pre_hook(lambda *_: order.append("pre"))
    opt.register_step_post_hook(lambda *_: order.append("post"))
    train(model, opt, batches(1))
    assert order == ["pre", "post"]


def test_tensor_lr_and_maximize() -> None:
    """A 0-d tensor lr gives the float's trajectory; maximize=True ascends exactly as
    minimising the negated loss."""
    floats, tensors = make_model(), make_model()
    train(floats, mt.MLBFGS(floats.parameters(), lr=0.05, **HYPER), batches(8))
    train(tensors, mt.MLBFGS(tensors.parameters(), lr=torch.tensor(0.05), **HYPER), batches(8))
    assert_same(floats, tensors)
    up, down = make_model(), make_model()
    opt_up = mt.MLBFGS(up.parameters(), lr=0.05, maximize=True, **HYPER)
    opt_down = mt.MLBFGS(down.parameters(), lr=0.05, **HYPER)
    for batch in batches(8):
        for model, opt, sign in ((up, opt_up, -1.0), (down, opt_down, 1.0)):
            opt.zero_grad()
            (-sign * loss_of(model, batch)).backward()
            opt.step()
    assert_same(up, down)
    start = loss_of(make_model(), batches(1)[0])
    assert loss_of(up, batches(1)[0]) > start  # it ascended


def test_every_group_goes_the_right_way_and_printing_works() -> None:
    model = make_model()
    opt = mt.MLBFGS(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[2].parameters(), "weight_decay": 1e-3},
        ],
        lr=0.05,
        **HYPER,
    )
    assert "MLBFGS" in repr(opt) and "step_norm" in repr(opt)
    data = batches(30)
    start = sum(float(loss_of(model, batch).detach()) for batch in data)
    train(model, opt, data)
    assert sum(float(loss_of(model, batch).detach()) for batch in data) < 0.95 * start


def test_complex_parameters_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match="floating point"):
        mt.MLBFGS([torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))])


def test_compiled_training_step_matches_eager() -> None:
    """torch.compile around opt.step (or around a whole training step) never changes the
    result: the step is excluded from compilation and runs eagerly. (Under inductor the
    step used to be silently wrong: no curvature pair stored, parameters off by 0.04.)"""
    eager, compiled = make_model(), make_model()
    opt_e = mt.MLBFGS(eager.parameters(), lr=0.05, **HYPER)
    opt_c = mt.MLBFGS(compiled.parameters(), lr=0.05, **HYPER)
    step = torch.compile(opt_c.step)
    for batch in batches(10):
        for model, opt, do_step in ((eager, opt_e, opt_e.step), (compiled, opt_c, step)):
            opt.zero_grad()
            loss_of(model, batch).backward()
            do_step()
    assert_same(eager, compiled)
    assert opt_c.stats()[0][0]["pairs_pushed"] == opt_e.stats()[0][0]["pairs_pushed"] > 0


@pytest.mark.parametrize("ranks", [2, 3])
def test_rank0_saves_the_whole_state_and_every_rank_resumes(ranks: int, tmp_path: Any) -> None:
    """With a communicator, state_dict() returns every block on every rank, so rank 0 alone
    saves it (as Lightning, HF Trainer and accelerate do) and every rank loads it and
    continues bitwise. (Before, rank 1 failed with KeyError: block1.history.pairs.) The
    same runs under gloo in tests/support/distributed/run_checks.py."""
    from thread_world import ThreadComm, run_world

    models = [make_model() for _ in range(ranks)]  # torch's RNG is global: not in threads
    twins = [make_model(seed=7) for _ in range(ranks)]
    path = tmp_path / "checkpoint.pt"

    def body(comm: ThreadComm) -> list[Any]:
        model, twin = models[comm.rank], twins[comm.rank]
        opt = mt.MLBFGS(model.parameters(), lr=0.05, comm=comm, **HYPER)
        train(model, opt, batches(8))
        saved = opt.state_dict()  # a collective
        blocks = [k for s in saved["state"].values() for k in s if k.endswith("history.pairs")]
        assert len(blocks) == len(opt.engines[0].layouts) == ranks
        if comm.rank == 0:
            torch.save({"model": model.state_dict(), "opt": saved}, path)
        comm.allgather_object(None)  # the file is written
        train(model, opt, batches(16)[8:])  # the run that never stopped
        checkpoint = torch.load(path, weights_only=True)
        twin.load_state_dict(checkpoint["model"])
        opt2 = mt.MLBFGS(twin.parameters(), lr=0.05, comm=comm, **HYPER)
        opt2.load_state_dict(checkpoint["opt"])
        own = [k for s in opt2.state.values() for k in s if k.endswith("history.pairs")]
        assert len(own) == len(opt2.engines[0].owned) == 1
        train(twin, opt2, batches(16)[8:])
        assert_same(model, twin)
        return [p.detach().clone() for p in model.parameters()]

    results = run_world(ranks, body)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


def test_distributed_copies_are_refused_and_own_blocks_only_on_request() -> None:
    from thread_world import ThreadComm, run_world

    models = [make_model() for _ in range(2)]

    def body(comm: ThreadComm) -> None:
        opt = mt.MLBFGS(models[comm.rank].parameters(), lr=0.05, comm=comm, **HYPER)
        with pytest.raises(TypeError, match="distributed"):
            copy.deepcopy(opt)
        local = mt.MLBFGS(
            models[comm.rank].parameters(), lr=0.05, comm=comm, full_state_dict=False, **HYPER
        )
        calls = comm.calls.copy()
        state = local.state_dict()
        assert comm.calls == calls  # no collective
        assert sum(k.endswith("history.pairs") for s in state["state"].values() for k in s) == 1

    run_world(2, body)
