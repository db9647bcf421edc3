"""Muon and its variants, the optimizer groups and the schedules (train_gpt.py's Optimizers and Schedules)."""
import pytest
import torch

import train_gpt as tg
from conftest import tiny_args


def singular_values(method, shape=(384, 128), seed=0):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return torch.linalg.svdvals(tg.orthogonalize(G, method))


def test_ns5_and_polar_give_singular_values_near_one_polar_tighter():
    ns5, polar = singular_values("ns5"), singular_values("polar")
    # NS5's quintic trades accuracy for speed: singular values land in about [0.68, 1.14] (measured here;
    # Keller Jordan's Muon post: roughly U(0.5, 1.5) is fine). Polar Express: about [0.86, 1.15]
    assert 0.65 < ns5.min() and ns5.max() < 1.16
    assert 0.84 < polar.min() and polar.max() < 1.16
    assert polar.max() - polar.min() < 0.7 * (ns5.max() - ns5.min())


def test_orthogonalize_handles_tall_and_wide_alike():
    G = torch.randn(96, 256)
    assert torch.allclose(tg.orthogonalize(G.T), tg.orthogonalize(G).T, atol=1e-5)


@pytest.mark.parametrize("method", ["ns5", "polar"])
def test_a_stack_is_orthogonalised_matrix_by_matrix(method):
    """Muon orthogonalises each shape group as one stack: the same as one matrix at a time, zero padding stays
    zero. The scales differ per matrix on purpose: the normalisation must be per matrix, not per stack."""
    stack = torch.randn(3, 96, 48) * torch.tensor([1e-3, 1.0, 1e3])[:, None, None]
    stack = torch.cat([stack, torch.zeros(1, 96, 48)])
    batched = tg.orthogonalize(stack, method)
    for i in range(3):
        assert torch.allclose(batched[i], tg.orthogonalize(stack[i], method), atol=1e-5)
    assert batched[3].abs().max() == 0
    E = tg.equilibrate_rows(stack)
    assert all(torch.allclose(E[i], tg.equilibrate_rows(stack[i])) for i in range(4))


def test_row_equilibration_equalises_rows_and_keeps_the_norm():
    G = torch.randn(64, 32) * torch.logspace(-2, 2, 64)[:, None]
    E = tg.equilibrate_rows(G)
    row_norms = E.norm(dim=1)
    assert torch.allclose(row_norms, row_norms.mean().expand(64), rtol=1e-5)
    assert torch.allclose(E.norm(), G.norm(), rtol=1e-5)


def muon_step(*flags, shape=(64, 128), steps=1, seed=0):
    """Parameter change of `steps` Muon steps (lr 1, momentum 0) on fixed random gradients."""
    args = tiny_args("--muon_lr=1", "--muon_momentum=0", "--muon_momentum_start=0", *flags)
    gen = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(*shape, generator=gen))
    start = p.detach().clone()
    muon = tg.Muon([p], args)
    for _ in range(steps):
        p.grad = torch.randn(*shape, generator=gen)
        muon.step()
    return p.detach() - start


def test_muon_plus_sets_the_update_norm_to_sqrt_min_dim():
    for shape in [(64, 128), (128, 128)]:  # rows <= cols: no shape scaling of the lr
        update = muon_step("--muon_plus=true", shape=shape)
        assert abs(update.norm().item() / min(shape) ** 0.5 - 1) < 1e-3


def test_lr_is_scaled_by_shape():
    wide, tall = muon_step(shape=(64, 128)), muon_step(shape=(256, 64))
    rms = lambda u: u.square().mean().sqrt().item()
    # an orthogonal (m, n) matrix has rms 1/sqrt(max(m, n)); tall matrices get sqrt(m / n) more lr
    assert rms(tall) / rms(wide) == pytest.approx((128 / 256) ** 0.5 * (256 / 64) ** 0.5, rel=0.15)


@pytest.mark.parametrize("flags", [["--muon_ortho=polar"], ["--muon_row_equilibration=true"],
                                   ["--muon_plus=true"], ["--normuon=true"], ["--muon_weight_decay=0.1"],
                                   ["--muon_weight_decay=0.1", "--cautious_wd=true"]])
def test_each_variant_changes_the_update(flags):
    baseline = ["--muon_weight_decay=0.1"] if "--cautious_wd=true" in flags else []
    assert not torch.allclose(muon_step(*flags, steps=2), muon_step(*baseline, steps=2), atol=1e-6)


def test_cautious_weight_decay_only_decays_where_update_agrees():
    # with zero lr for the update but not for decay, compare directly: one step, lr 1, wd 0.5
    args = tiny_args("--muon_lr=1", "--muon_momentum=0", "--muon_momentum_start=0", "--muon_weight_decay=0.5",
                     "--cautious_wd=true")
    p = torch.nn.Parameter(torch.randn(32, 64))
    before = p.detach().clone()
    p.grad = torch.randn(32, 64)
    muon = tg.Muon([p], args)
    update = tg.orthogonalize(p.grad.clone())
    muon.step()
    decayed = before * (1 - 0.5 * ((update * before) > 0))
    assert torch.allclose(p.detach(), decayed - update, atol=1e-5)


def test_muon_groups_by_shape_and_adam_gets_the_rest():
    model = tg.GPT(tiny_args())
    muon, adam = tg.build_optimizers(model, tiny_args())
    for group in muon.param_groups:
        assert len({tuple(p.shape) for p in group["params"]}) == 1
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].split(".")[-1] for g in muon.param_groups for p in g["params"]} == {"qkv", "weight", "fc"}
    assert all(p.ndim >= 2 for g in muon.param_groups for p in g["params"])
    args = tiny_args()
    assert [(g["lr"], g["betas"], g["weight_decay"]) for g in adam.param_groups] == [
        (args.embed_lr, args.adam_betas, 0), (args.embed_lr, args.bigram_betas, args.bigram_weight_decay),
        (args.head_lr, args.adam_betas, 0), (args.scalar_lr, args.adam_betas, 0)]


def test_lr_schedule_at_key_steps():
    args = tiny_args("--num_iterations=1000", "--cooldown_frac=0.4", "--final_lr_frac=0.1")
    assert tg.lr_multiplier(0, args) == 1.0
    assert tg.lr_multiplier(500, args) == 1.0
    assert tg.lr_multiplier(600, args) == pytest.approx(1.0)  # cooldown starts here
    assert tg.lr_multiplier(800, args) == pytest.approx(0.55)  # halfway down from 1 to 0.1
    assert tg.lr_multiplier(1000, args) == pytest.approx(0.1)


def test_momentum_warmup_at_key_steps():
    args = tiny_args("--muon_momentum_start=0.85", "--muon_momentum=0.95", "--muon_momentum_warmup_steps=300",
                     "--num_iterations=1695")
    assert tg.muon_momentum(0, args) == pytest.approx(0.85)
    assert tg.muon_momentum(150, args) == pytest.approx(0.90)
    assert tg.muon_momentum(300, args) == pytest.approx(0.95)
    assert tg.muon_momentum(1695, args) == pytest.approx(0.95)


def test_window_schedule_at_key_steps():
    args = tg.parse_args(["--preset=2025-08-23"])  # long window 1 -> 14 blocks over 1695 steps, short = long // 2
    assert tg.window_blocks(0, args) == (1, 1)
    assert tg.window_blocks(1695 // 2, args) == (7, 3)
    assert tg.window_blocks(932, args) == (8, 4)  # the start of the cooldown (55% of the run)
    assert tg.window_blocks(1695, args) == (14, 7)
    assert tg.window_tensor(1695, args, torch.device("cpu")).tolist() == [14, 7]


def test_batch_schedule_and_rope_scaling():
    args = tiny_args("--batch_schedule=10:1024", "--rope_ntk_scaling=true", "--window_blocks_start=1",
                     "--window_blocks_end=4", "--num_iterations=30", "--head_dim=32", "--rope_fraction=0.5")
    assert [tg.tokens_per_step_at(s, args) for s in (0, 9, 10, 30)] == [512, 512, 1024, 1024]
    assert tg.rope_base_at(0, args) == args.rope_base
    assert tg.rope_base_at(30, args) == pytest.approx(args.rope_base * 4 ** (16 / 14))
    plain = tiny_args("--num_iterations=30")
    assert tg.rope_base_at(30, plain) == plain.rope_base


def muon_worker(rank, world_size, init_file, out_file):
    """One rank of a gloo group: two Muon steps on 5 + 2 + 1 matrices, so ranks pad their shares unevenly."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        params, state = muon_after_two_steps(rank, world_size)
        if rank == 0:
            torch.save((params, state), out_file)
    finally:
        torch.distributed.destroy_process_group()


def muon_after_two_steps(rank=0, world_size=1):
    """-> the weights and Muon's whole state (state_dict) after two steps whose gradients reach it through backward,
    its reduce-scatter hooks armed, as train_step arms them"""
    args = tiny_args("--muon_lr=0.1", "--muon_row_equilibration=true", "--normuon=true")
    gen = torch.Generator().manual_seed(0)
    shapes = [(48, 32)] * 5 + [(32, 64)] * 2 + [(16, 16)]
    params = [torch.nn.Parameter(torch.randn(*s, generator=gen)) for s in shapes]
    muon = tg.Muon(params, args, rank, world_size)
    for _ in range(2):
        grads = [torch.randn(p.shape, generator=gen) for p in params]  # the same on every rank: their mean
        muon.arm()
        sum((p * g).sum() for p, g in zip(params, grads)).backward()
        muon.step()
        muon.zero_grad(set_to_none=True)
    return [p.detach() for p in params], muon.state_dict()


def test_muon_on_three_ranks_equals_one_process(tmp_path):
    """Each rank steps its own share of each shape's matrices and keeps their state; the weights are all-gathered,
    and state_dict() gathers the whole state: the same as one process's."""
    torch.multiprocessing.spawn(muon_worker, args=(3, tmp_path / "init", tmp_path / "out.pt"), nprocs=3)
    (distributed, state), (single, single_state) = torch.load(tmp_path / "out.pt"), muon_after_two_steps()
    assert max((a - b).abs().max() for a, b in zip(distributed, single)) < 1e-6
    assert state["state"].keys() == single_state["state"].keys() == set(range(8))
    for i, entry in state["state"].items():
        assert entry.keys() == {"momentum_buffer", "second_moment"}
        for key, value in entry.items():
            assert torch.allclose(value, single_state["state"][i][key], atol=1e-6), (i, key)


def adam_worker(rank, world_size, init_file, out_file):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        result = adam_after_three_steps(rank, world_size)
        if rank == 0:
            torch.save(result, out_file)
    finally:
        torch.distributed.destroy_process_group()


def adam_after_three_steps(rank=0, world_size=1):
    """-> weights and Adam's whole state after a held step and two steps, with cautious decay, on a table whose 48
    rows shard over 3 ranks, one whose 50 do not, and a small one, their gradients through backward"""
    args = tiny_args("--adam_fp32_state=true")
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s, generator=gen)) for s in [(48, 32), (50, 32), (4, 4)]]
    adam = tg.Adam([dict(params=params, lr=0.01, weight_decay=0.5)], args, rank, world_size)
    for step in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in params]  # the same on every rank: their mean
        adam.arm()
        sum((p * g).sum() for p, g in zip(params, grads)).backward()
        adam.step() if step else adam.hold()
        adam.zero_grad(set_to_none=True)
    return [p.detach() for p in params], adam.state_dict()


def test_adam_on_three_ranks_equals_one_process(tmp_path):
    """The 48-row table is sharded (each rank updates and keeps the state of 16 rows, then it is all-gathered), the
    others all-reduced; the weights and the gathered state are one process's (to float rounding: 3 g / 3)."""
    torch.multiprocessing.spawn(adam_worker, args=(3, tmp_path / "init", tmp_path / "out.pt"), nprocs=3)
    (distributed, state), (single, single_state) = torch.load(tmp_path / "out.pt"), adam_after_three_steps()
    assert max((a - b).abs().max() for a, b in zip(distributed, single)) < 1e-6
    for i, entry in single_state["state"].items():
        assert entry["step"] == state["state"][i]["step"] == 2 and entry.keys() == {"step", "exp_avg", "exp_avg_sq"}
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(state["state"][i][key], entry[key], rtol=1e-5, atol=1e-7), (i, key)


def test_our_collectives_at_8_ranks_as_the_virtual_gpu_counts_them():
    """tools/virtual_gpu.py's communication line for ours (tools/record.py's Counting, rank 0 of 8), a mean of a
    step where Adam steps and one where it holds: Muon's gradients reduce-scattered and its weights all-gathered,
    each shape's stack padded to a multiple of 8 matrices, every step; Adam's tables reduce-scattered every step
    and all-gathered when it steps; its small tensors (gates, scalars) all-reduced."""
    import importlib.util
    import math
    import sys
    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "tools"))  # its tools/record.py
    spec = importlib.util.spec_from_file_location("virtual_gpu", ROOT / "tools" / "virtual_gpu.py")
    virtual_gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(virtual_gpu)
    args = tg.parse_args(["--preset=cpu", "--num_layers=3"])  # Muon's stacks of 3 matrices: 5 padding each
    sent = virtual_gpu.our_communication(tg, args, device="cpu")
    model = tg.build_model(args, torch.device("cpu"))
    muon = tg.param_groups(model)["muon"]
    shapes = {tuple(p.shape): sum(tuple(q.shape) == tuple(p.shape) for q in muon) for p in muon}
    padded = sum(math.ceil(n / 8) * 8 * math.prod(shape) * 4 for shape, n in shapes.items())
    adam = [p for p in model.parameters() if all(p is not q for q in muon)]
    tables = sum(p.numel() * 4 for p in adam if p.numel() >= 1024 and p.size(0) % 8 == 0)  # the embeddings, lm_head
    assert tables > 0.9 * sum(p.numel() * 4 for p in adam)
    assert sent["all_reduce"] == sum(p.numel() * 4 for p in adam) - tables
    assert sent["reduce_scatter"] == padded + tables and sent["all_gather"] == padded + tables / 2
