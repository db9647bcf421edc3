"""torch.compile health, checked on CPU: one graph for the whole model, no recompile as the schedules move.

A graph break or a per-step recompile costs a GPU run dearly and shows up nowhere but in its speed; dynamo's
tracing is the same on every device, so the CPU catches both. The backend is aot_eager (dynamo + AOTAutograd,
forward and backward, without inductor's slow C++ codegen); fullgraph=True turns any graph break into an error.
"""
import functools

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import train_gpt as tg
from conftest import random_batch, tiny_args


@pytest.fixture
def fresh_dynamo():
    """A clean dynamo cache and counters: counters["stats"]["unique_graphs"] counts compilations."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def compiled(args):
    torch.manual_seed(0)
    raw = tg.GPT(args)
    muon, adam = tg.build_optimizers(raw, args)
    return raw, torch.compile(raw, backend="aot_eager", dynamic=False, fullgraph=True), muon, adam


@pytest.mark.parametrize("flags", ["--rope_ntk_scaling=true --multi_token=false",  # MTP weights move each step
                                   "--rope_ntk_scaling=true --multi_token=true", "--yarn=true --key_offset=true"])
def test_training_steps_compile_once_as_windows_rope_and_lr_move(fresh_dynamo, flags):
    args = tiny_args("--window_blocks_end=2", "--num_iterations=4", "--fp8_head=on", *flags.split())
    raw, model, muon, adam = compiled(args)
    raw.use_fp8 = True  # the FP8 autograd.Function is traced too
    windows_seen = []
    for step in range(args.num_iterations):
        windows = tg.apply_schedules(step, args, raw, muon, adam)
        windows_seen.append(windows.tolist())
        loss = tg.train_step(model, raw, random_batch(args, accum=2, seed=step), windows, muon, adam)
        assert torch.isfinite(loss)
    assert windows_seen[0] != windows_seen[-1]  # the schedule did move: windows are tensors, not constants
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]


@pytest.mark.parametrize("window_tokens", [False, True])
def test_the_flex_path_with_its_block_masks_traces_into_one_graph(fresh_dynamo, monkeypatch, window_tokens):
    """The CUDA path: BlockMasks built inside the compiled forward, then flex_attention. Forward only (CPU
    FlexAttention has no backward), in eval mode as validation runs it."""
    args = tiny_args("--window_blocks_end=2", "--num_iterations=2", f"--window_tokens={window_tokens}")
    raw, model, muon, adam = compiled(args)
    idx = random_batch(args)[0]
    windows = [tg.window_tensor(step, args, torch.device("cpu")) for step in (0, 2)]
    model.eval()
    with torch.no_grad():
        dense = raw(idx[:, :-1], idx[:, 1:], windows[1])  # eager, dense masks: the reference
        monkeypatch.setattr(tg, "build_masks", functools.partial(tg.build_masks, flex=True))
        losses = [model(idx[:, :-1], idx[:, 1:], w) for w in windows]
    assert counters["stats"]["unique_graphs"] == 1
    assert abs(losses[1].item() - dense.item()) < 1e-4


def test_validation_compiles_once_and_training_keeps_its_graph(fresh_dynamo):
    """Validation (eval mode, no grad, val_seq_len) needs its own graph, once; returning to training must
    find the training graph in the cache instead of compiling again."""
    args = tiny_args("--val_seq_len=256", "--val_tokens=512", "--num_iterations=2")
    raw, model, muon, adam = compiled(args)
    val_seqs = random_batch(tg.dataclasses.replace(args, seq_len=256), accum=1)[0]
    for step in range(args.num_iterations):
        windows = tg.apply_schedules(step, args, raw, muon, adam)
        tg.train_step(model, raw, random_batch(args, seed=step), windows, muon, adam)
        tg.evaluate(model, val_seqs, args, windows, None, 0, 1, torch.device("cpu"))
    assert counters["stats"]["unique_graphs"] == 2
