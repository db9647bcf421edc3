"""The record presets against the records' own code: modded-nanogpt's train_gpt.py of 2025-08-23
(--preset=2025-08-23, the defaults) and of 2025-12-31 (--preset=2025-12-31, and record), as their logs in
../shared/reference carry them, executed here on CPU by tools/record.py with their CUDA-only pieces swapped for CPU
equivalents (dense masks for FlexAttention and FlashAttention-3, matmuls for their Newton-Schulz / Polar Express
kernels, in fp32, the fp32 lm_head for the FP8 op, one process for their collectives). Skipped without ../shared."""
import dataclasses
import math
import types
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train_gpt as tg
from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import record as records  # noqa: E402

WIDTH, HEADS, T = 256, 2, 384  # 2 heads of 128 (the record's head_dim), 3 attention blocks


def loaded(date):
    """A record's definitions and schedules on CPU; loaded once per session by the fixtures (its custom ops
    register once)."""
    namespace = records.load(date, cpu=True)
    if namespace is None:
        pytest.skip("../shared/reference is absent (clone-only checkout)")
    return namespace


@pytest.fixture(scope="session")
def record():
    return loaded("2025-08-23")


def ours(*overrides):
    return tg.parse_args(["--preset=2025-08-23", f"--model_dim={WIDTH}", f"--num_heads={HEADS}", f"--seq_len={T}",
                          f"--tokens_per_step={T}", "--fp8_head=off", *overrides])


def paired_models(record, seed=0):
    """The record's GPT and ours with the same weights (all randomised, so every path carries gradient)."""
    record["args"].dampen_factor = WIDTH // 12  # its gates read dim // dampen_factor channels: 12, as at 768
    torch.manual_seed(seed)
    theirs = record["GPT"](vocab_size=50257, num_layers=12, num_heads=HEADS, model_dim=WIDTH, max_seq_len=T)
    theirs.lm_head.use_fp8 = False  # its FP8 op is CUDA's; ours is off too (--fp8_head=off)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.ndim < 2 else 0.05) + (0.5 if p.ndim < 2 else 0))
    mine = tg.GPT(ours())
    for name, p in mine.named_parameters():
        with torch.no_grad():
            p.copy_(their_tensor(theirs, name))
    return theirs, mine


def their_tensor(theirs, name, grad=False):
    """Our parameter `name` (or its gradient) as the record's model stores it."""
    get = (lambda p: p.grad) if grad else (lambda p: p)
    L, parts = 12, name.split(".")
    scalars = get(theirs.scalars)
    if parts[0] == "blocks":
        i, block = int(parts[1]), theirs.blocks[int(parts[1])]
        table = {"attn.qkv": lambda: get(block.attn.qkvo_w)[:3], "attn.proj.weight": lambda: get(block.attn.qkvo_w)[3],
                 "attn.gate.weight": lambda: get(block.attn.dampen.weight), "mlp.fc": lambda: get(block.mlp.c_fc),
                 "mlp.proj.weight": lambda: get(block.mlp.c_proj),
                 "resid_lambda": lambda: scalars[L + 2 * i], "x0_lambda": lambda: scalars[L + 2 * i + 1],
                 "attn.value_lambdas": lambda: scalars[3 * L + 2 * i:3 * L + 2 * i + 2]}
        return table[".".join(parts[2:])]()
    if name == "skip_weights":
        return scalars[:L // 2]
    return get(dict(theirs.named_parameters())[name])


def sequence(seed, docs_every=60):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 50257, (T + 1,), generator=gen)
    tokens[torch.rand(T + 1, generator=gen) < 1 / docs_every] = tg.EOT
    tokens[0] = tg.EOT
    return tokens


def differing(a, b):
    """Elements further apart than 1e-4 of b's RMS. Float noise (1e-7) moves a few of a large table's
    elements a lot: Adam's update is sign-like where an element's momentum crosses zero. Measured: at most
    5 in a million per table over these six steps, none in any smaller tensor; a deviation moves many."""
    return ((a - b).abs() > 1e-4 * b.square().mean().sqrt()).sum().item()


def relative(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("training", [True, False])
def test_same_logits_loss_and_gradients(record, training):
    theirs, mine = paired_models(record)
    theirs.train(training)
    mine.train(training)
    mine.use_fp8 = not training  # the record evaluates in bf16 whatever its head trains in; so must ours
    logits = {}
    theirs.lm_head.register_forward_hook(lambda m, i, o: logits.__setitem__("theirs", o.reshape(-1, o.size(-1))))
    mine.lm_head.register_forward_hook(lambda m, i, o: logits.__setitem__("mine", o))
    tokens = sequence(1)  # windows of 2 and 1 blocks: both cut into the 3-block sequence
    their_loss = theirs(tokens[:-1], tokens[1:], torch.tensor(2))
    my_loss = mine(tokens[None, :-1], tokens[None, 1:], torch.tensor([2, 1]))
    assert relative(logits["mine"], logits["theirs"]) < 1e-5
    assert abs(my_loss.item() / their_loss.item() - 1) < 1e-5
    if training:  # the record sums the loss over its sequence; so does ours for one sequence
        their_loss.backward()
        my_loss.backward()
        for name, p in mine.named_parameters():
            assert relative(p.grad, their_tensor(theirs, name, grad=True)) < 1e-4, name


@pytest.mark.slow  # minutes: the edit loop leaves it out (README)
def test_same_weights_after_optimizer_steps_with_the_schedules(record):
    """Six steps of a 6-step run: lr cooldown, momentum warmup and window growth all move."""
    theirs, mine = paired_models(record, seed=1)
    args = ours("--num_iterations=6")
    record["args"].num_iterations = 6
    their_step = records.trainer(record, theirs)  # its optimizers and loop body, as in its script
    my_muon, my_adam = tg.build_optimizers(mine, args)
    for step in range(6):
        tokens = sequence(10 + step)
        their_step(step, [tokens])
        windows = tg.apply_schedules(step, args, mine, my_muon, my_adam)
        tg.train_step(mine, mine, tokens[None, None], windows, my_muon, my_adam)
        for name, p in mine.named_parameters():
            assert differing(p.detach(), their_tensor(theirs, name).detach()) <= p.numel() // 20_000, (step, name)


def test_window_schedule_and_block_masks_are_the_records(record):
    """Every step of the 1695-step run, and the masks both build from it, token for token."""
    record["args"].num_iterations = 1695
    args = tg.parse_args(["--preset=2025-08-23"])
    for step in range(1696):
        their_long = record["get_window_size_blocks"](step).item()
        assert tg.window_blocks(step, args) == (their_long, max(1, their_long // 2)), step
    theirs, _ = paired_models(record)
    tokens = sequence(3, docs_every=90)
    docs = tg.document_ids(tokens[None, :-1])
    for blocks in (0, 1, 2, 3, 4):  # the record's short window is long // 2, 0 at the start
        their_mask = theirs.create_blockmasks(tokens[:-1], torch.tensor(blocks))[0]
        dense = records.dense_flex_attention(torch.zeros(1, 1, T, 1), torch.zeros(1, 1, T, 1),
                                                 torch.eye(T)[None, None],
                                     their_mask, 1.0) != 0
        assert torch.equal(dense[0, 0], tg.dense_mask(docs, torch.tensor(max(blocks, 1)))[0, 0]), blocks


def test_same_batches_as_the_records_loader(record, tmp_path):
    """Document-aligned sequences and the step-level shard switch: 12 steps over small shards."""
    rng = np.random.default_rng(0)
    for i in range(5):
        tokens = rng.integers(0, tg.EOT, 12_000)
        tokens[rng.random(12_000) < 1 / 60] = tg.EOT  # documents short enough for the record's search window
        tokens[0] = tg.EOT
        tg.write_shard(tmp_path / f"r_train_{i:06d}.bin", tokens)
    pattern, accum = str(tmp_path / "r_train_*.bin"), 4
    theirs = record["distributed_data_generator"](pattern, 512, accum, align_to_bos=True)
    mine = tg.TokenStream(pattern, 512, 1, align_to_doc=tg.parse_args(["--preset=2025-08-23"]).align_to_doc)
    shards_seen = set()
    for _ in range(12):
        batch = mine.next_step(accum * 512)
        shards_seen.add(mine.shard)
        for micro in batch:
            inputs, targets = next(theirs)
            assert torch.equal(torch.from_numpy(micro[0, :-1]), inputs.long())
            assert torch.equal(torch.from_numpy(micro[0, 1:]), targets)
    assert len(shards_seen) >= 3  # the switch happened, twice


def test_parameter_count_is_the_records(record):
    record["args"].dampen_factor = 64  # as in the record
    with torch.device("meta"):
        theirs = record["GPT"](vocab_size=50257, num_layers=12, num_heads=6, model_dim=768, max_seq_len=1024)
        mine = tg.GPT(tg.parse_args(["--preset=2025-08-23"]))
    # the record's packed scalars hold 6 skip weights it never reads and layer 7's two value lambdas (no
    # attention there), plus padding to a multiple of its world size (0 here)
    assert sum(p.numel() for p in theirs.parameters()) == tg.parameter_counts(mine)["total"] + 6 + 2
    assert tg.parameter_counts(mine)["total"] == 275_743_564


# -----------------------------------------------------------------------------
# The 2025-12-31 record on CPU, and --preset=2025-12-31 beside it


@pytest.fixture(scope="session")
def record_1231():
    return loaded("2025-12-31")


def small_1231_model(record_1231):
    """Its GPT as its script makes it (11 layers), at 2 heads of 64, on CPU in fp32."""
    return record_1231["GPT"](vocab_size=50257, num_layers=11, num_heads=2, head_dim=64, model_dim=128,
                              max_seq_len=2048)


def paired_1231(record_1231, seed=0):
    """Its GPT (small_1231_model) and ours (--preset=2025-12-31) at the same size, with the same weights, all
    randomised so that every path carries gradient."""
    torch.manual_seed(seed)
    theirs = small_1231_model(record_1231)
    theirs.lm_head.use_fp8 = False  # its FP8 op is CUDA's
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.ndim < 2 else 0.05) + (0.5 if p.ndim < 2 else 0))
    mine = tg.GPT(tg.parse_args(["--preset=2025-12-31", "--model_dim=128", "--num_heads=2", "--head_dim=64",
                                 "--fp8_head=off"]))
    for name, p in mine.named_parameters():
        with torch.no_grad():
            p.copy_(their_1231_tensor(theirs, name))
    return theirs, mine


def their_1231_tensor(theirs, name, grad=False):
    """Our parameter `name` (or its gradient) as its model stores it: QKVO in one matrix, MLP weights transposed,
    gates in banks over the layers that have them, lambdas in one vector."""
    get = (lambda p: p.grad) if grad else (lambda p: p)
    L, parts = 11, name.split(".")
    scalars = get(theirs.scalars)
    if parts[0] == "blocks":
        i, block = int(parts[1]), theirs.blocks[int(parts[1])]
        D = block.mlp.c_fc.size(1)
        table = {"attn.qkv": lambda: get(block.attn.qkvo_w)[:3 * D].view(3, D, D),
                 "attn.proj.weight": lambda: get(block.attn.qkvo_w)[3 * D:],
                 "attn.gate.weight": lambda: get(theirs.attn_gate_bank)[i - (i > 6)],
                 "attn.ve_gate.weight": lambda: get(theirs.ve_gate_bank)[i if i < 2 else i - 6],
                 "attn.sa_lambdas": lambda: scalars[L + 2 * i:L + 2 * i + 2],
                 "mlp.fc": lambda: get(block.mlp.c_fc).T, "mlp.proj.weight": lambda: get(block.mlp.c_proj).T,
                 "resid_lambda": lambda: scalars[i], "x0_lambda": lambda: get(theirs.x0_lambdas)[i]}
        return table[".".join(parts[2:])]()
    named = {"smear_lambda": 3 * L, "backout_lambda": 3 * L + 1, "skip_lambda": 3 * L + 2}
    return scalars[named[name]] if name in named else get(dict(theirs.named_parameters())[name])


@pytest.mark.parametrize("training, tied, grown", [(True, True, False), (True, False, True), (False, True, True)])
def test_the_2025_12_31_model_gives_its_logits_loss_and_gradients(record_1231, training, tied, grown):
    """--preset=2025-12-31 gives its model: the same lm_head output, loss (training: with multi-token weights;
    validation: the mean) and every gradient, on a sequence of several documents with windows of 1 and 3 blocks,
    the embedding tied to lm_head or its own, RoPE as it starts or after YaRN's growth of the window from 3 to 7."""
    theirs, mine = paired_1231(record_1231)
    theirs.train(training)
    mine.train(training)
    theirs.split_embed, mine.embed_tied = not tied, tied
    if grown:
        theirs.yarn.apply(3, 7)
        freq, gain = tg.yarn_growth(mine.rotary.inv_freq, 1.0, 3, 7)
        mine.rotary.inv_freq.copy_(freq)
        mine.rotary.q_gain.fill_(gain)
    head = {}
    theirs.lm_head.register_forward_hook(lambda m, i, o: head.__setitem__("theirs", o.reshape(-1, o.size(-1))))
    mine.lm_head.register_forward_hook(lambda m, i, o: head.__setitem__("mine", o))
    tokens, weights = sequence(7, docs_every=150)[:641], torch.tensor([1.0, 0.5, 0.25])
    schedule = record_1231["ForwardScheduleConfig"](mtp_weights=weights if training else None, ws_short=1, ws_long=3)
    their_loss = theirs(tokens[:-1].int(), tokens[1:], cu_seqlens_of(tokens[:-1]), schedule)
    mine.mtp_weights.copy_(weights)
    my_loss = mine(tokens[None, :-1], tokens[None, 1:], torch.tensor([3, 1]))
    assert relative(head["mine"], head["theirs"]) < 1e-5
    assert abs(my_loss.item() / their_loss.item() - 1) < 1e-5
    if training:
        their_loss.backward()
        my_loss.backward()
        for name, p in mine.named_parameters():
            if tied and name == "embed.weight":
                assert p.grad is None and theirs.embed.weight.grad is None
            else:
                assert relative(p.grad, their_1231_tensor(theirs, name, grad=True)) < 1e-4, name


@pytest.mark.slow  # minutes: the edit loop leaves it out (README)
def test_the_2025_12_31_preset_trains_as_its_code_across_every_schedule_transition(record_1231, proxy_dir):
    """--preset=2025-12-31 at its model's small size against its GPT, TrainingManager (NorMuon, its two Adams) and
    loader, with its schedules shrunk to 12 scheduled steps and 3 extension steps, 2 sequences a step: batch 512 ->
    1024 -> 1536 tokens at steps 4 and 8 (the lr's stages just after), windows 3 -> 7 -> 11 blocks with YaRN, 13 in
    the extension, Adam on odd steps only, the embedding untied after step 9, the MTP weights falling to [1], the
    momentum warmed up over 5 steps and cooled over the last 3. Same batches, losses (to 1e-5), and every weight
    after every step (to 3e-3 of its norm: float noise flips a few signs, of Adam's first update where a gradient
    is near 0, and of cautious decay's mask; lr 0.6 on the value tables spreads them. Measured: at most 8e-4, the
    value tables; under 1e-4 for every matrix)."""
    r, N, extension = record_1231, 15, 3
    args = r["args"]
    saved = dict(vars(args))
    args.num_scheduled_iterations, args.num_extension_iterations, args.num_iterations = N - extension, extension, N
    args.train_bs_schedule, args.train_bs_extension = (512, 1024, 1536), 1536
    momentum_defaults = r["get_muon_momentum"].__defaults__
    r["get_muon_momentum"].__defaults__ = (5, 3, 0.85, 0.95)  # warmup, cooldown steps (300, 50 in the record)
    r["grad_accum_steps"] = 2  # 8 // world_size in its script: here 2 micro-batches, ours 2 sequences a step
    try:
        theirs, mine = paired_1231(r, seed=2)
        their_step = records.trainer(r, theirs)
        manager = their_step.manager
        loader = r["distributed_data_generator"](f"{proxy_dir}/wiki_train_*.bin", 512, 2048, grad_accum_steps=2)
        preset = tg.parse_args(["--preset=2025-12-31"])  # its batch stages, shrunk as its are
        stages = ",".join(f"{start * (N - extension) // 1785}:{tokens // 256}"
                          for start, tokens in tg.parse_batch_schedule(preset)[1:])
        ours = tg.parse_args(["--preset=2025-12-31", "--model_dim=128", "--num_heads=2", "--head_dim=64",
                              "--fp8_head=off", f"--num_iterations={N}", f"--extension_steps={extension}",
                              "--tokens_per_step=512", f"--batch_schedule={stages}", "--seqs_per_step=2",
                              "--seq_len=768", "--muon_momentum_warmup_steps=5", "--muon_momentum_cooldown_steps=3"])
        mine.args = ours
        my_muon, my_adam = tg.build_optimizers(mine, ours)
        for step in range(N):
            windows = tg.apply_schedules(step, ours, mine, my_muon, my_adam)
            assert mine.embed_tied == (not theirs.split_embed), step  # before its step unties it
            micro_batches, their_loss = records_step(their_step, loader, step)
            assert windows.tolist() == [manager.ws_long, manager.ws_short], step
            assert len(micro_batches[0]) - 1 == tg.seq_len_at(step, ours), step
            my_loss = tg.train_step(mine, mine, torch.stack(micro_batches)[:, None], windows, my_muon, my_adam,
                                    adam_steps=tg.adam_steps_at(step, ours))
            assert abs(my_loss.item() / their_loss - 1) < 1e-5, step
            for name, p in mine.named_parameters():
                if not (name == "embed.weight" and mine.embed_tied):  # its copy is made on the next step
                    assert relative(p.detach(), their_1231_tensor(theirs, name).detach()) < 3e-3, (step, name)
    finally:
        vars(args).update(saved)
        r["get_muon_momentum"].__defaults__ = momentum_defaults
        r["grad_accum_steps"] = 8


def test_the_2025_12_31_parameter_count_is_the_records(record_1231):
    with torch.device("meta"):
        theirs = record_1231["GPT"](vocab_size=50257, num_layers=11, num_heads=6, head_dim=128, model_dim=768,
                                    max_seq_len=1024)
        mine = tg.GPT(tg.parse_args(["--preset=2025-12-31"]))
    # its packed scalars hold layer 6's two attention lambdas, where there is no attention (and at 1 process no
    # padding)
    assert sum(p.numel() for p in theirs.parameters()) == tg.parameter_counts(mine)["total"] + 2


def cu_seqlens_of(tokens):
    """The document boundaries the record hands FlashAttention for a 1-D sequence of ours: its EOTs, then its end."""
    return torch.tensor([*np.flatnonzero(tokens.numpy() == tg.EOT), len(tokens)], dtype=torch.int32)


def their_loss_and_head_output(record_1231, tokens, mtp_weights=None):
    """Its model's loss on `tokens` (training, with these MTP weights, or without them in eval mode, as it
    validates) and its lm_head's output (T, V), the head made large enough that the cap bends the logits."""
    torch.manual_seed(0)
    model = small_1231_model(record_1231).train(mtp_weights is not None)
    model.lm_head.use_fp8 = False  # its FP8 op is CUDA's; the loss is what is compared
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 1.0)
    head = {}
    model.lm_head.register_forward_hook(lambda m, i, o: head.__setitem__("out", o))
    schedule = record_1231["ForwardScheduleConfig"](mtp_weights=mtp_weights, ws_short=1, ws_long=3)
    loss = model(tokens[:-1].int(), tokens[1:], cu_seqlens_of(tokens[:-1]), schedule)
    return loss, head["out"].float().view(len(tokens) - 1, -1)


def test_the_varlen_stand_in_attends_as_flash_attention_does():
    """tools/record.py's flash_attn_varlen_func against one softmax per query over the keys FlashAttention-3's
    varlen call lets it see: its own document (cu_seqlens, padded at the end with T as the record's loader pads
    them), causal, at most window_size[0] tokens back."""
    gen = torch.Generator().manual_seed(0)
    T, H, d, window = 96, 2, 8, 5
    q, k, v = (torch.randn(T, H, d, generator=gen) for _ in range(3))
    cu_seqlens = torch.tensor([0, 7, 40, 41, 90, T, T, T], dtype=torch.int32)
    y = records.varlen_attention(q, k, v, cu_seqlens, cu_seqlens, 2048, 2048, causal=True, softmax_scale=0.3,
                                 window_size=(window, 0))
    for i in range(T):
        start = max(int(cu_seqlens[cu_seqlens <= i].max()), i - window)
        weights = torch.softmax(0.3 * torch.einsum("hd,khd->hk", q[i], k[start:i + 1]), dim=-1)  # (H, keys)
        assert torch.allclose(y[i], torch.einsum("hk,khd->hd", weights, v[start:i + 1]), atol=1e-6), i


def records_step(step, loader, index, accum=2):
    """One step of a record's main loop (tools/record.py's trainer: its schedules, its optimizers; 2025-12-31's
    Adam hooks on the last micro-batch) on `accum` micro-batches from its loader, each as the loader yields it.
    -> the micro-batches as 1-D token sequences (inputs and the last target) and the loss per token"""
    taken = []

    def batches():  # read once its schedules have advanced: the loader hears the step's batch size (and cut)
        for _ in range(accum):
            batch = loader.send(step.manager.train_loader_send_args)
            taken.append(torch.cat([batch[0].long(), batch[1][-1:]]))
            yield batch
    loss = step(index, batches())
    return taken, loss.item() / (accum * (len(taken[0]) - 1))


@pytest.mark.slow  # minutes: the edit loop leaves it out (README)
def test_the_2025_12_31_record_trains_on_cpu_with_its_own_optimizers_and_loader(record_1231, proxy_dir):
    """Its model (shrunk to 2 heads of 64), its TrainingManager (NorMuon every step, its two DistAdams on odd
    steps only) and its loader (documents cut at 2048 tokens) for two steps, as its main loop runs them, through
    the harness's one-process collectives: Muon's matrices move a little on step 0 and nothing of Adam's does;
    on step 1 the embeddings move too."""
    r = record_1231
    torch.manual_seed(0)
    model = small_1231_model(r)
    their_step = records.trainer(r, model)
    manager = their_step.manager
    loader = r["distributed_data_generator"](f"{proxy_dir}/wiki_train_*.bin", 2 * 1024, 2048, grad_accum_steps=2)
    muon = [p for group in manager.muon_opt.param_groups for p in group["params"]]
    adam = [p for group in manager.adam_opt.param_groups for p in group["params"]]
    for step in range(2):
        before = [p.detach().clone() for p in muon + adam]
        assert math.isfinite(records_step(their_step, loader, step)[1])
        moved = [(p.detach() - b).square().mean().sqrt().item() for p, b in zip(muon + adam, before)]  # RMS
        assert all(0 < m < 0.2 for m in moved[:len(muon)]), moved[:len(muon)]  # every matrix, by a small step
        embed_moved = moved[len(muon):]
        assert (max(embed_moved) == 0) if step == 0 else (max(embed_moved) > 0), (step, embed_moved)


def test_packed_batches_are_the_2025_12_31_records(record_1231, tmp_path):
    """--max_doc_len against its loader (BOSFinder): micro-batches packed from document starts, each document cut
    at max_doc_len (300 here, 2048 in the record), the last one where the tokens are complete, the next micro-batch
    at the next document; a shard whose documents run out moves to the next. Same inputs and targets, and the
    document boundaries it hands FlashAttention (cu_seqlens) are where the EOTs of ours are."""
    rng = np.random.default_rng(1)
    for i in range(5):
        lengths = rng.choice([3, 40, 150, 299, 300, 301, 700, 1400], size=40)
        tokens = rng.integers(0, tg.EOT, lengths.sum())
        tokens[np.cumsum([0, *lengths[:-1]])] = tg.EOT
        tg.write_shard(tmp_path / f"r_train_{i:06d}.bin", tokens)
    pattern, accum, T = str(tmp_path / "r_train_*.bin"), 4, 512
    theirs = record_1231["distributed_data_generator"](pattern, accum * T, 300, grad_accum_steps=accum)
    mine = tg.TokenStream(pattern, T, 1, align_to_doc=True, max_doc_len=300)
    shards_seen, cut = set(), 0
    for _ in range(12):
        batch = mine.next_step(accum * T)
        shards_seen.add(mine.shard)
        for micro in batch:
            inputs, targets, cu_seqlens = next(theirs)
            assert torch.equal(torch.from_numpy(micro[0, :-1]), inputs.long())
            assert torch.equal(torch.from_numpy(micro[0, 1:]), targets)
            starts = np.unique(cu_seqlens.numpy())[:-1]  # padded at the end with T
            assert np.array_equal(np.flatnonzero(micro[0, :-1] == tg.EOT), starts)
            cut += (np.diff([*starts, T]) == 300).sum()
    assert len(shards_seen) >= 3 and cut > 10  # the switch happened, twice; documents were cut


def test_shifted_softcap_is_the_2025_12_31_records(record_1231):
    """--softcap_form=shifted --logit_softcap=23 on its lm_head's output gives its validation loss (its head
    made large enough that the cap bends the logits)."""
    tokens = sequence(4, docs_every=90)
    their_loss, head = their_loss_and_head_output(record_1231, tokens)
    assert head.std() > 10  # the cap bends: sigmoid((z + 5) / 7.5) is far from linear there
    z = tg.softcap(head, 23.0, "shifted")
    assert abs(F.cross_entropy(z, tokens[1:]).item() / their_loss.item() - 1) < 1e-6


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_token_windows_attend_as_the_2025_12_31_records_flash_attention(blocks):
    """--window_tokens: our dense mask (the same function as the BlockMask on CUDA, tests/test_model.py) gives the
    attention that FlashAttention-3's varlen call gives in the record (tools/record.py's stand-in, itself
    checked above): its documents from cu_seqlens, its window (blocks * 128, 0) in tokens."""
    tokens = sequence(5, docs_every=150)[None, :-1]
    gen = torch.Generator().manual_seed(blocks)
    q, k, v = (torch.randn(1, HEADS, T, 16, generator=gen) for _ in range(3))  # (B, H, T, hd)
    mask = tg.dense_mask(tg.document_ids(tokens), torch.tensor(blocks), tokens=True)
    ours = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.12)[0].transpose(0, 1)  # (T, H, hd)
    cu_seqlens = cu_seqlens_of(tokens[0])
    theirs = records.varlen_attention(*(t[0].transpose(0, 1) for t in (q, k, v)), cu_seqlens, cu_seqlens, T, T,
                                      causal=True, softmax_scale=0.12, window_size=(blocks * 128, 0))
    assert len(cu_seqlens) > 3 and torch.allclose(ours, theirs, atol=1e-6)


def test_the_gpu_stand_in_for_flash_attention_is_the_dense_one(monkeypatch):
    """tools/record.py's FlashAttention-3 for the records on a GPU (the virtual GPU's report, the GPU check): our
    BlockMask from its cu_seqlens (padded as its loader pads them) and our flex call (eager here: the same mask,
    seconds sooner than compiled), against the dense stand-in the CPU tests use, windows of 1 and 2 blocks."""
    monkeypatch.setattr(tg, "compiled_flex_attention", lambda: tg.flex_attention)
    tokens = sequence(8, docs_every=300)[:-1]
    gen = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(T, HEADS, 16, generator=gen) for _ in range(3))  # (T, H, hd)
    cu_seqlens = records.cu_seqlens(tokens)
    assert len(cu_seqlens) == 128 and (cu_seqlens[1:] >= cu_seqlens[:-1]).all() and cu_seqlens[-1] == T
    flex = records.flex_varlen_attention(tg).flash_attn_varlen_func
    for blocks in (1, 2):
        call = (q, k, v, cu_seqlens, cu_seqlens, T, T, True, 0.12, (blocks * 128, 0))
        assert relative(flex(*call), records.varlen_attention(*call)) < 1e-5, blocks


def test_multi_token_loss_and_weights_are_the_2025_12_31_records(record_1231):
    """--multi_token: its training loss (weights [1, 0.5, 0.25] of the next 3 tokens, none past the sequence's
    end) from its lm_head's output, and its weights at every step of a 90-step schedule (its extension steps,
    which hold the last weights, aside)."""
    tokens, weights = sequence(6, docs_every=90), torch.tensor([1.0, 0.5, 0.25])
    their_loss, head = their_loss_and_head_output(record_1231, tokens, weights)
    z = tg.softcap(head, 23.0, "shifted")
    assert abs(tg.multi_token_loss(z, tokens[None, 1:], weights).item() / their_loss.item() - 1) < 1e-6
    args, theirs = record_1231["args"], record_1231["TrainingManager"]._build_mtp_schedule
    saved = args.num_iterations, args.num_scheduled_iterations
    args.num_iterations = args.num_scheduled_iterations = 90
    ours = tg.parse_args(["--num_iterations=90"])
    try:
        for step, their_weights in enumerate(theirs(None)):
            assert tg.mtp_weights_at(step, ours) == pytest.approx([*their_weights.tolist(), 0, 0][:3], abs=1e-7), step
    finally:
        args.num_iterations, args.num_scheduled_iterations = saved


# -----------------------------------------------------------------------------
# The 2026-07-17 record on CPU (its triton_kernels.py as tools/record.py's torch stand-ins, stated there)


@pytest.fixture(scope="session")
def record_0717():
    return loaded("2026-07-17")


def small_0717_model(record_0717, seed=0):
    """Its GPT as its script makes it (11 layers, 6 heads: its paired heads pair head g with g + 3), at head_dim
    32, its bigram table 50304 rows of 64 (15 * 50304 of 192 in the record), on CPU with fp32 weights (its RoPE
    tables stay bf16, as it keeps them)."""
    record_0717["args"].bigram_vocab_size, record_0717["args"].bigram_dim = 50304, 64
    torch.manual_seed(seed)
    model = record_0717["GPT"](vocab_size=50257, num_layers=11, num_heads=6, head_dim=32, model_dim=192,
                               max_seq_len=4096)
    for p in model.parameters():
        p.data = p.data.float()
    return model


@pytest.mark.slow  # minutes: the edit loop leaves it out (README)
def test_the_2026_07_17_record_trains_on_cpu_with_its_own_optimizer_and_loader(record_0717, proxy_dir):
    """Its model, its TrainingManager (NorMuon every step, Adam on odd steps) and loader (documents cut at 896
    tokens in its first stage, bigram hashes beside the tokens), its FP8 MLP emulated, for two steps as its main
    loop runs them: the banks move a little on step 0 and no Adam parameter does; on step 1 the tables move."""
    r = record_0717
    model = small_0717_model(r)
    r["grad_accum_steps"], r["grad_scale"] = 2, 1 / 2
    try:
        step = records.trainer(r, model)
        loader = r["distributed_data_generator"](f"{proxy_dir}/wiki_train_*.bin", 2 * 1024, 896, grad_accum_steps=2)
        banks = ("qk_bank", "vo_bank", "mlp_bank")
        for index in range(2):
            before = {name: p.detach().clone() for name, p in model.named_parameters()}
            # read once its schedules have advanced: the loader hears the step's batch size and sequence length
            loss = step(index, (loader.send(step.manager.train_loader_send_args) for _ in range(2)))
            assert math.isfinite(loss.item())
            moved = {name: (p.detach() - before[name]).square().mean().sqrt().item()
                     for name, p in model.named_parameters()}
            assert all(0 < moved[name] < 0.01 for name in banks), moved
            tables = [moved[name] for name in ("embed.weight", "value_embeds", "bigram_embed.weight")]
            assert (max(tables) == 0) if index == 0 else (min(tables) > 0), (index, moved)
        assert model._mlp_down_act_scales[:11].ne(1).all()  # its FP8 MLP's delayed activation scales were set
    finally:
        r["grad_accum_steps"], r["grad_scale"] = 8, 1 / 8


def paired_0717(record_0717, seed=0):
    """Its GPT (small_0717_model) and ours (--preset=2026-07-17, its bigram table vocab * 1 rows) at the same size
    with the same weights (all randomised, so every path carries gradient) and sign table."""
    theirs = small_0717_model(record_0717, seed)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) * (0.5 if p.ndim < 2 else 0.05) + (0.5 if p.ndim < 2 else 0))
    mine = small_0717_ours()
    mine.embed_tied = False  # its embedding is its own parameter in the forward, tied by its optimizer
    with torch.no_grad():
        for name, p in mine.named_parameters():
            p.copy_(their_0717_tensor(theirs, name))
        mine.sign_table.copy_(theirs.bigram_sign_table)
    return theirs, mine


def small_0717_ours():
    return tg.GPT(tg.parse_args(["--preset=2026-07-17", "--model_dim=192", "--num_heads=6", "--head_dim=32",
                                 "--bigram_dim=64", "--bigram_embed=1", "--fp8_head=off", "--fp8_mlp=on"]))


def test_the_2026_07_17_model_starts_as_its_model(record_0717):
    """Every parameter of ours at the start against its counterpart in its freshly made model: the same values
    where they are set (zeros, lambdas, MUDD's biases), the same spread where they are drawn (RMS within 5%, of
    V and O too: neither starts at zero). Their lm_head starts as a normal of std 0.005 and is the embedding."""
    theirs, mine = small_0717_model(record_0717), small_0717_ours()
    for name, p in mine.named_parameters():
        their = their_0717_tensor(theirs, name).detach().float()
        if name == "embed.weight":  # ours is lm_head's weight while tied
            p, their = mine.lm_head.weight, theirs.embed.weight
        if their.unique().numel() <= 16:  # set, not drawn
            assert torch.allclose(p.detach(), their, atol=1e-6), name
        else:
            rms = lambda t: t.detach().float().square().mean().sqrt().item()
            assert abs(rms(p) / rms(their) - 1) < 0.05 and abs(p.mean().item()) < 0.1 * rms(their), name


def their_0717_tensor(theirs, name, grad=False):
    """Our parameter `name` (or its gradient) as its model stores it: banks of Q and K by head pairs, V and O,
    MLP in and out; gates and lambdas in banks over layers; lm_head transposed; its RoPE's dimension pairs
    (2i, 2i + 1) where ours are (i, i + head_dim / 2), so that our Q and K rows are its rows permuted per head."""
    get = (lambda p: p.grad) if grad else (lambda p: p)
    L, parts = 11, name.split(".")
    if parts[0] == "blocks":
        i = int(parts[1])
        j, D = i - (i > 6), theirs.mlp_bank.size(-1)  # its attention layers skip layer 6
        hd = D // 6
        perm = torch.cat([torch.arange(0, hd, 2), torch.arange(1, hd, 2)])
        table = {"attn.qk": lambda: get(theirs.qk_bank)[:60].view(10, 2, 3, 2, hd, D)[j][..., perm, :].flatten(2, 3),
                 "attn.v": lambda: get(theirs.vo_bank)[2 * j],
                 "attn.proj.weight": lambda: get(theirs.vo_bank)[2 * j + 1],
                 "attn.gate.weight": lambda: get(theirs.attn_gate_bank)[j],
                 "attn.ve_gate.weight": lambda: get(theirs.ve_gate_bank)[i - 1 if i < 3 else i - 6],
                 "attn.sa_lambdas": lambda: get(theirs.scalars)[2 * i:2 * i + 2],
                 "attn.xsa": lambda: get(theirs.xsa_alphas)[i],
                 "mlp.fc": lambda: get(theirs.mlp_bank)[i, 0].T,
                 "mlp.proj.weight": lambda: get(theirs.mlp_bank)[i, 1].T,
                 "resid_lambdas": lambda: get(theirs.resid_lambdas)[i],
                 "post_lambdas": lambda: get(theirs.post_lambdas)[i],
                 "x0_lambda": lambda: get(theirs.x0_lambdas)[i]}
        return table[".".join(parts[2:])]()
    table = {"lm_head.weight": lambda: get(theirs.lm_head.weight).T,
             "smear_lambda": lambda: get(theirs.scalars)[2 * L], "skip_lambda": lambda: get(theirs.scalars)[2 * L + 1],
             "bigram.weight": lambda: get(theirs.bigram_embed.weight)}
    if parts[0] == "value_embeds":
        return get(theirs.value_embeds).view(5, 50304, -1)[int(parts[1])]
    return table[name]() if name in table else get(dict(theirs.named_parameters())[name])


@pytest.mark.parametrize("training, grown, fp8", [(True, False, False), (True, False, True), (False, True, False)])
def test_the_2026_07_17_model_gives_its_logits_loss_and_gradients(record_0717, monkeypatch, training, grown, fp8):
    """--preset=2026-07-17's model is its model: the same output of every attention layer, lm_head output
    (validation), loss (training: with multi-token weights, summed; validation: the mean) and every gradient,
    on a sequence of several documents
    with windows of 1 and 3 blocks (paired layers: 1 block of the doubled sequence), RoPE as it starts or after
    YaRN's growth from 3 to 7 blocks. fp8: both MLPs' forward in FP8 (ours --fp8_mlp=on, its DISABLE_FP8 unset),
    their scales set as before a first step (update_fp8_scales, its quantize_mlp_fp8), to 1e-3 (matrices'
    gradients 1e-2): float noise (1e-7) flips the e4m3 rounding of an element or two per layer (by 1/16), from
    layer 5 on past 1e-5."""
    if not fp8:
        monkeypatch.setenv("DISABLE_FP8", "1")
    close = 1e-3 if fp8 else 1e-5
    monkeypatch.setitem(record_0717, "grad_scale", 1.0)  # its loss kernel scales its gradients by it
    theirs, mine = paired_0717(record_0717)
    for block in mine.blocks:
        block.mlp.fp8 = fp8
    theirs.train(training)
    mine.train(training)
    theirs.quantize_mlp_fp8(bootstrap_down=True)
    tg.update_fp8_scales(mine, bootstrap=True)
    if grown:
        theirs.yarn.apply(3 * 128, 7 * 128)
        theirs.yarn_paired_head.apply(3 * 128, 7 * 128)
        freq, gain = tg.yarn_growth(mine.rotary.inv_freq, 1.0, 3, 7)
        mine.rotary.inv_freq.copy_(freq)
        mine.rotary.q_gain.fill_(gain)
    head, attention = {}, {"theirs": [], "mine": []}  # every layer's attention output, in layer order
    theirs.lm_head.register_forward_hook(lambda m, i, o: head.__setitem__("theirs", o.reshape(-1, o.size(-1))))
    mine.lm_head.register_forward_hook(lambda m, i, o: head.__setitem__("mine", o))
    for module in (theirs.attn, theirs.attn_paired):
        module.register_forward_hook(lambda m, i, o: attention["theirs"].append(o))
    for block in mine.blocks:
        if block.attn is not None:
            block.attn.register_forward_hook(lambda m, i, o: attention["mine"].append(o))
    tokens, weights = sequence(7, docs_every=150), torch.tensor([1.0, 0.5, 0.25])
    schedule = record_0717["ForwardScheduleConfig"](mtp_weights=weights, ws_short=128, ws_long=3 * 128,
                                                    train_max_seq_len=2048)
    inputs = tokens[:-1].int()
    their_loss = theirs(inputs, tokens[1:], cu_seqlens_of(tokens[:-1]), record_0717["get_bigram_hash"](inputs),
                        schedule)
    their_loss = their_loss.sum() if training else their_loss.mean()
    mine.mtp_weights.copy_(weights)
    my_loss = mine(tokens[None, :-1], tokens[None, 1:], torch.tensor([3, 1]))
    assert len(attention["mine"]) == len(attention["theirs"]) == 10
    for layer, (a, b) in enumerate(zip(attention["mine"], attention["theirs"])):
        assert relative(a, b) < close, layer + (layer >= 6)
    assert abs(my_loss.item() / their_loss.item() - 1) < close
    if fp8:  # each layer's activation scale for the next forward: 1.8 times this one's amax
        act_scales = torch.stack([block.mlp.act_scale for block in mine.blocks])
        assert relative(act_scales, theirs._mlp_down_act_scales[:11]) < 1e-6
    if not training:
        assert relative(head["mine"], head["theirs"]) < 1e-5
        return
    their_loss.backward()
    my_loss.backward()
    for name, p in mine.named_parameters():
        theirs_grad = their_0717_tensor(theirs, name, grad=True)
        if p.grad is None:  # what its last layer's MUDD stands for, and layer 6's x0 weight (no attention there)
            assert theirs_grad.abs().max() == 0, name
        elif p.ndim >= 2 or not fp8:  # with FP8, a lambda's gradient (a sum that cancels) shows the flips most
            assert relative(p.grad, theirs_grad) < 10 * close, name


def test_the_2026_07_17_schedules_are_its_schedules(record_0717):
    """Every step of its 1390 (1380 scheduled, 10 extension) as its TrainingManager advances them and its
    TrainingSchedule reads them: windows (1, 3) -> (3, 7) -> (5, 11) -> (6, 13) and 20 at the final validation,
    batch 131072 -> 262144 -> 393216 tokens, documents cut at 896 then 2048 tokens, MTP weights, lr (stages from
    their first step, cooldown over the last 60% to 0.15), Muon's momentum, Adam on odd steps, the embedding
    split after step 921."""
    r, args = record_0717, tg.parse_args(["--preset=2026-07-17"])
    schedule = r["training_schedule"]
    yarn = types.SimpleNamespace(apply=lambda *a: None)  # what YaRN does at each growth: test_record's model tests
    first = r["TRAINING_STAGES"][0]  # as its reset() starts them
    manager = types.SimpleNamespace(ws_long=first.window_sizes[1], batch_size=first.batch_size, block_size=128,
                                    train_max_seq_len=first.train_max_seq_len,
                                    model=types.SimpleNamespace(yarn=yarn, yarn_paired_head=yarn))
    assert args.num_iterations == schedule.total_steps
    for step in range(schedule.total_steps):
        r["TrainingManager"].advance_schedule(manager, step)
        assert tg.window_blocks(step, args) == (manager.ws_long, manager.ws_short), step
        assert tg.tokens_per_step_at(step, args) == manager.batch_size, step
        assert tg.seq_len_at(step, args) == manager.batch_size // 8, step  # 8 sequences a step, as its 8 GPUs
        assert tg.max_doc_len_at(step, args) == manager.train_max_seq_len, step
        assert tg.mtp_weights_at(step, args) == pytest.approx([*manager.mtp_weights.tolist(), 0, 0][:3]), step
        assert tg.lr_multiplier(step, args) == pytest.approx(schedule.get_lr(step), abs=1e-12), step
        assert tg.muon_momentum(step, args) == pytest.approx(r["get_muon_momentum"](step), abs=1e-12), step
        assert tg.adam_steps_at(step, args) == r["TrainingManager"]._is_adam_step(None, step), step
        assert tg.embed_tied_at(step + 1, args) == (step < schedule.split_step), step  # untied after its step
    r["TrainingManager"].apply_final_ws_ext(manager)
    assert tg.window_blocks(schedule.total_steps, args, validation=True)[0] == manager.ws_long == 20


@pytest.mark.slow  # minutes: the edit loop leaves it out (README)
def test_the_2026_07_17_preset_trains_as_its_code_across_every_schedule_transition(record_0717, proxy_dir,
                                                                                 monkeypatch):
    """--preset=2026-07-17 at the small size against its GPT, TrainingManager (its NorMuonAndAdam: NorMuon on Q
    and K by head pairs, V, O and the MLP every step, per-parameter Adam on odd steps) and loader, its stages
    shrunk to 15 scheduled steps and 1 extension step, 2 micro-batches a step: batch 1024 -> 2048 -> 3072 tokens
    at steps 5 and 10, documents cut at 200 -> 400 tokens at step 5 (the lr's stages at the same steps, its
    cooldown from step 6: 0.4 N whole, as at 1380, where it takes int(0.4 N) and ours 0.4 N), windows 3 -> 7 ->
    11 blocks with YaRN, 13 in the extension, the embedding tied until step 11, the MTP weights falling to [1],
    the momentum warmed up over 5 steps and cooled over the last 3. Its MLP in bf16 (DISABLE_FP8), as ours. Same
    batches, losses (to 1e-5) and every weight after every step (to 3e-3 of its norm, as for 2025-12-31; 1e-2 for
    the tables Adam moves at lr 0.6: in CI float noise took the bigram table to 3.2e-3 at step 11)."""
    r, N, extension = record_0717, 16, 1
    monkeypatch.setenv("DISABLE_FP8", "1")  # FP8 rounding flips grow over steps: its scales are checked apart
    stages = [dataclasses.replace(stage, batch_size=stage.batch_size // 128,
                                  train_max_seq_len=200 if stage.train_max_seq_len == 896 else 400)
              for stage in r["TRAINING_STAGES"]]
    monkeypatch.setitem(r, "training_schedule", r["TrainingSchedule"](stages, N - extension, extension, 0.6))
    monkeypatch.setitem(r, "TRAINING_STAGES", stages)
    monkeypatch.setattr(r["get_muon_momentum"], "__defaults__", (5, 3, 0.85, 0.95))  # 300, 50 in the record
    monkeypatch.setitem(r, "grad_accum_steps", 2)  # 8 // world_size in its script: ours 2 sequences a step
    monkeypatch.setitem(r, "grad_scale", 1 / 2)
    theirs, mine = paired_0717(r, seed=2)
    with torch.no_grad():
        theirs.embed.weight.copy_(theirs.lm_head.weight.T)  # tied at the start, as it makes them
    mine.embed_tied = True
    for block in mine.blocks:
        block.mlp.fp8 = False
    their_step = records.trainer(r, theirs)
    manager = their_step.manager
    loader = r["distributed_data_generator"](f"{proxy_dir}/wiki_train_*.bin", 1024, 200, grad_accum_steps=2)
    ours = tg.parse_args(["--preset=2026-07-17", "--model_dim=192", "--num_heads=6", "--head_dim=32",
                          "--bigram_dim=64", "--bigram_embed=1", "--fp8_head=off", f"--num_iterations={N}",
                          f"--extension_steps={extension}", "--tokens_per_step=1024",
                          "--batch_schedule=5:2048,10:3072", "--max_doc_len=200", "--doc_len_schedule=5:400",
                          "--seqs_per_step=2", "--muon_momentum_warmup_steps=5", "--muon_momentum_cooldown_steps=3"])
    mine.args = ours
    my_muon, my_adam = tg.build_optimizers(mine, ours)
    for step in range(N):
        windows = tg.apply_schedules(step, ours, mine, my_muon, my_adam)
        assert mine.embed_tied == (not manager.optimizer.split_embed), step
        micro_batches, their_loss = records_step(their_step, loader, step)
        assert windows.tolist() == [manager.ws_long, manager.ws_short], step
        assert len(micro_batches[0]) - 1 == tg.seq_len_at(step, ours), step
        my_loss = tg.train_step(mine, mine, torch.stack(micro_batches)[:, None], windows, my_muon, my_adam,
                                adam_steps=tg.adam_steps_at(step, ours))
        assert abs(my_loss.item() / their_loss - 1) < 1e-5, step
        for name, p in mine.named_parameters():
            if not (name == "embed.weight" and mine.embed_tied):  # its copy is made on the next step
                close = 1e-2 if name.startswith(("bigram.", "value_embeds.")) else 3e-3  # lr 0.6: 3.2e-3 seen
                assert relative(p.detach(), their_0717_tensor(theirs, name).detach()) < close, (step, name)


def test_the_2026_07_17_fp8_mlp_scales_follow_its_delayed_scales(record_0717):
    """--fp8_mlp's scales for the MLP-out weights over 20 steps of changing weights, as its quantize_mlp_fp8
    sets them after each step (update_fp8_scales before the next): the amax now for its first 16 steps, then
    1.12 times the amax after the step before; and one forward on the same weights and input in FP8 as its
    FusedLinearReLUSquareFunction (tools/record.py's stand-in of its kernel) computes it, with such a scale and
    an activation scale of the last forward."""
    theirs, mine = paired_0717(record_0717)
    theirs.quantize_mlp_fp8(bootstrap_down=True)
    gen = torch.Generator().manual_seed(3)
    for step in range(20):
        tg.update_fp8_scales(mine, tg.fp8_bootstrap_at(step))  # as apply_schedules(step), after step - 1's
        ours = torch.stack([block.mlp.proj_scale for block in mine.blocks])
        assert torch.equal(ours, theirs._mlp_down_proj_scales[:11]), step
        with torch.no_grad():  # the optimizer's step: every MLP-out weight changes, by layer and by step
            for i, block in enumerate(mine.blocks):
                block.mlp.proj.weight.mul_(1 + 0.1 * torch.randn((), generator=gen))
                theirs.mlp_bank[i, 1].copy_(block.mlp.proj.weight.T)
        theirs.quantize_mlp_fp8(bootstrap_down=step < 16)
    mlp, x = mine.blocks[4].mlp.train(), tg.norm(torch.randn(64, 192, generator=gen))
    mlp.act_scale.fill_(0.01)  # small enough that some activations clamp at 448
    tg.update_fp8_scales(mine, tg.fp8_bootstrap_at(20))  # as apply_schedules(20): its quantize after step 19
    up_scale = theirs._mlp_up_proj_scales[4:5] * x.abs().max() / 448
    x_f8 = (x * (448 / x.abs().max())).to(torch.float8_e4m3fn)
    partial_amax = torch.zeros(132)
    expected = record_0717["ReLUSqrdMLP"](
        x, theirs.mlp_bank[4, 0], theirs.mlp_bank[4, 1], theirs._mlp_up_proj_f8[4], up_scale, x_f8,
        theirs._mlp_down_proj_f8[4], theirs._mlp_down_proj_scales[4:5], torch.tensor([0.01]), partial_amax)
    assert relative(mlp(x), expected) < 1e-6
    assert mlp.act_scale.item() == pytest.approx(partial_amax.max().item() * 1.8 / 448, rel=1e-6)
