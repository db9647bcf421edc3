"""Attention masks, the FP8 head and every model flag (train_gpt.py's Attention, FP8 and Model sections)."""
import dataclasses
import functools

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

import train_gpt as tg
from conftest import random_batch, tiny_args


def random_docs(B, T, seed, mean_len):
    gen = torch.Generator().manual_seed(seed)
    starts = torch.rand(B, T, generator=gen) < 1 / mean_len
    return starts.cumsum(dim=1)


@pytest.mark.parametrize("tokens", [False, True])
@pytest.mark.parametrize("window", [1, 2, 3])
def test_mask_function_equals_brute_force(window, tokens):
    docs = random_docs(2, 300, seed=window, mean_len=30)  # 300 tokens: the last block is a partial one
    dense = tg.dense_mask(docs, torch.tensor(window), tokens)[:, 0].tolist()
    doc = docs.tolist()
    for b in range(2):
        for q in range(300):
            for k in range(300):
                inside = q - k <= window * 128 if tokens else q // 128 - k // 128 < window
                assert dense[b][q][k] == (k <= q and doc[b][q] == doc[b][k] and inside)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")  # eager is the reference here
@pytest.mark.parametrize("tokens", [False, True])
@pytest.mark.parametrize("window", [1, 2, 3, 40])
@pytest.mark.parametrize("mean_doc_len", [20, 150, 10_000])
def test_flex_block_mask_equals_dense_path(window, mean_doc_len, tokens):
    B, H, T, hd = 2, 2, 384, 16
    gen = torch.Generator().manual_seed(window + mean_doc_len)
    q, k, v = (torch.randn(B, H, T, hd, generator=gen) for _ in range(3))
    docs = random_docs(B, T, seed=window, mean_len=mean_doc_len)
    w = torch.tensor(window)
    flex = flex_attention(q, k, v, block_mask=tg.block_mask(docs, w, tokens), scale=0.12)
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=tg.dense_mask(docs, w, tokens), scale=0.12)
    assert (flex - dense).abs().max().item() < 1e-5


def block_sets(counts, indices):
    """(B, 1, nq) counts and (B, 1, nq, nk) indices -> (B, nq, nk) bool: which k-blocks each q-block lists."""
    B, _, nq, nk = indices.shape
    listed = torch.zeros(B, nq, nk, dtype=torch.bool)
    for b in range(B):
        for q in range(nq):
            listed[b, q, indices[b, 0, q, :counts[b, 0, q]].long()] = True
    return listed


@pytest.mark.parametrize("tokens", [False, True])
@pytest.mark.parametrize("window", [1, 2, 3, 8])
@pytest.mark.parametrize("mean_doc_len", [60, 150, 10_000])
def test_block_classification_is_exact(window, mean_doc_len, tokens):
    """The CUDA kernel skips unlisted blocks and does not evaluate the mask on 'full' ones, so both must be
    exact; the CPU reference evaluates the mask everywhere and cannot see such a mistake. The backward walks
    the same blocks from the k side: its lists must be the transpose."""
    docs = random_docs(2, 1024, seed=window + mean_doc_len, mean_len=mean_doc_len)
    mask = tg.block_mask(docs, torch.tensor(window), tokens)
    token_mask = tg.dense_mask(docs, torch.tensor(window), tokens)[:, 0].view(2, 8, 128, 8, 128)
    block_all, block_any = token_mask.all(dim=(2, 4)), token_mask.any(dim=(2, 4))
    full = block_sets(mask.full_kv_num_blocks, mask.full_kv_indices)
    partial = block_sets(mask.kv_num_blocks, mask.kv_indices)
    assert torch.equal(full, block_all)
    assert torch.equal(partial | full, block_any) and not (partial & full).any()
    assert torch.equal(block_sets(mask.full_q_num_blocks, mask.full_q_indices), full.mT)
    assert torch.equal(block_sets(mask.q_num_blocks, mask.q_indices), partial.mT)


def test_block_mask_skips_blocks_outside_window_and_documents():
    docs = torch.zeros(1, 1024, dtype=torch.long)
    docs[0, 512:] = 1  # two documents of 4 blocks each
    mask = tg.block_mask(docs, torch.tensor(3))  # 3 blocks: the own one and two before it
    blocks = mask.to_dense()[0, 0]  # (8, 8) which k-blocks each q-block visits
    for qb in range(8):
        visited = {kb for kb in range(8) if blocks[qb, kb]}
        assert visited == {kb for kb in range(max(qb - 2, 4 * (qb // 4)), qb + 1)}


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_model_on_the_flex_path_equals_the_dense_path(monkeypatch):
    args = tiny_args("--seq_len=384", "--tokens_per_step=768", "--window_pattern=SLL")
    torch.manual_seed(0)
    model = tg.GPT(args)
    with torch.no_grad():  # wake the zero-initialised projections and head so every layer shapes the output
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    idx = random_batch(args)[0, :, :-1]
    windows = torch.tensor([2, 1])  # long: two of the three blocks; short: only the own block
    with torch.no_grad():
        dense = model(idx, windows=windows)
        monkeypatch.setattr(tg, "build_masks", functools.partial(tg.build_masks, flex=True))  # the CUDA masks
        flex = model(idx, windows=windows)
    assert dense.std() > 0.1 and (flex - dense).abs().max().item() < 1e-4


@pytest.mark.parametrize("c,form,mtp,scales", [(30.0, "sigmoid", None, ()), (15.0, "tanh", None, ()),
                                               (23.0, "shifted", None, ()), (0.0, "sigmoid", None, ()),
                                               (23.0, "shifted", [1.0, 0.5, 0.2], ()),
                                               (23.0, "shifted", [1.0, 0.5, 0.2], (100.0, 1.6, 0.75)),
                                               (23.0, "shifted", [1.0, 0.5, 0.2], "tail")])
def test_fp8_head_loss_and_gradients_match_fp32_within_tolerance(c, form, mtp, scales):
    torch.manual_seed(0)
    B, N, D, V = 2, 256, 128, 512
    x = tg.norm(torch.randn(N, D)).requires_grad_()
    w = (torch.randn(V, D) * 0.3).requires_grad_()  # logits of std ~3: the caps bend them
    targets = torch.where(torch.arange(N) % 2 == 0, (x @ w.T).argmax(1), torch.randint(0, V, (N,)))  # half learned
    weights = None if mtp is None else torch.tensor(mtp)
    tail, scales = scales == "tail", () if scales == "tail" else scales  # mtp_tail_grad, against its fp32 form
    loss = tg.FP8HeadLoss.apply(x, w, targets, B, c, form, weights, scales, tail)
    loss.backward()
    if scales:  # record 2025-12-31's scales: another rounding of the same values
        assert loss.item() != tg.FP8HeadLoss.apply(x, w, targets, B, c, form, weights).item()
    x32, w32 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    z = tg.softcap(x32 @ w32.T, c, form)
    ref = (F.cross_entropy(z, targets, reduction="sum") if mtp is None
           else tg.multi_token_loss(z, targets.view(B, -1), weights, tail)) / B
    ref.backward()
    rel = lambda a, b: ((a.float() - b).norm() / b.norm()).item()
    # e4m3 keeps 3 mantissa bits (relative step 1/16), e5m2 2 bits: errors average out over the D-long sums
    assert rel(loss, ref) < 0.01
    assert rel(x.grad, x32.grad) < 0.08
    assert rel(w.grad, w32.grad) < 0.08
    assert w.grad.dtype == torch.float32


def test_fp8_auto_is_off_on_cpu():
    cpu = torch.device("cpu")
    assert not tg.fp8_on("auto", cpu) and tg.fp8_on("on", cpu) and not tg.fp8_on("off", cpu)


def run_tiny(args, steps=3, seed=0):
    """A few real optimizer steps on one fixed batch; -> losses and the names of params whose grad was nonzero."""
    torch.manual_seed(seed)
    model = tg.GPT(args)
    model.use_fp8 = tg.fp8_on(args.fp8_head, torch.device("cpu"))
    muon, adam = tg.build_optimizers(model, args)
    batch = random_batch(args)
    losses, got_grad = [], set()
    for step in range(steps):
        windows = tg.apply_schedules(step, args, model, muon, adam)
        loss = model(batch[0, :, :-1], batch[0, :, 1:], windows)
        loss.backward()
        got_grad |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        muon.step()
        adam.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, got_grad, model


FLAG_VARIANTS = ["--rope_fraction=1.0", "--rope_fraction=0", "--rope_base=10000", "--rope_ntk_scaling=true",
                 "--qk_norm=false", "--attn_scale=0.17", "--mlp_act=gelu", "--zero_init_out=false",
                 "--unet_skips=false", "--x0_skip=false", "--value_embeds=0", "--value_embeds=2",
                 "--smear_gate=false", "--bigram_embed=0", "--bigram_embed=3", "--attn_gate=false", "--backout=false",
                 "--logit_softcap=0", "--softcap_form=tanh", "--fp8_head=on", "--no_attn_layers=1",
                 "--no_mlp_layers=2", "--window_pattern=L", "--window_pattern=SSSL", "--norm_after_embed=false",
                 "--muon_ortho=polar", "--muon_row_equilibration=true", "--muon_plus=true", "--normuon=true",
                 "--muon_weight_decay=0.1", "--cautious_wd=true --muon_weight_decay=0.1", "--softcap_form=shifted",
                 "--window_tokens=true", "--multi_token=true", "--multi_token=true --fp8_head=on",
                 "--ve_gate=true --value_embed_layout=.00. --sa_lambdas=true --resid_lambda_init=1.1 --qkv_init=1",
                 "--gated_skip=1,3 --unet_skips=false --key_offset=true --yarn=true", "--tied_embed_until=0.5", ""]


@pytest.mark.parametrize("flag", FLAG_VARIANTS)
def test_every_flag_trains_and_every_parameter_gets_a_gradient(flag):
    args = tiny_args(*flag.split())
    losses, got_grad, model = run_tiny(args, steps=4)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]  # the same batch four times: it must fit it
    names = {n for n, _ in model.named_parameters()}
    assert names - got_grad == ({"embed.weight"} if args.tied_embed_until else set())  # lm_head's weight embeds


def test_flags_change_the_model():
    base = tg.GPT(tiny_args())
    counts = lambda args: sum(p.numel() for p in tg.GPT(args).parameters())
    # the table, and 4 layers x 2 lambdas
    assert counts(tiny_args("--value_embeds=0")) == counts(tiny_args()) - 50304 * 64 - 4 * 2
    assert counts(tiny_args("--bigram_embed=0")) == counts(tiny_args()) - 50304 * 64 - 4
    assert counts(tiny_args("--no_attn_layers=1")) < counts(tiny_args())
    assert base.blocks[0].window == "S" and base.blocks[1].window == "L"


def test_unused_parameter_fails_with_its_name():
    args = tiny_args("--value_embeds=1", "--no_attn_layers=0,3")  # table 0 feeds layers 0 and 3: both attention-free
    model = tg.GPT(args)
    batch = random_batch(args)
    model(batch[0, :, :-1], batch[0, :, 1:], tg.window_tensor(0, args, torch.device("cpu"))).backward()
    with pytest.raises(tg.ConfigError, match=r"value_embeds\.0\.weight"):
        tg.check_gradients(model)


def test_parameter_in_two_groups_or_none_fails_with_its_name():
    model = tg.GPT(tiny_args())
    groups = tg.param_groups(model)
    adam = torch.optim.Adam([p for name in ("embed", "head", "scalar") for p in groups[name]] + groups["muon"][:1])
    muon = tg.Muon(groups["muon"], tiny_args())
    with pytest.raises(tg.ConfigError, match=r"blocks\.0\.attn\.qkv is in 2 optimizer groups"):
        tg.check_param_coverage(model, [muon, adam])
    adam = torch.optim.Adam([p for name in ("embed", "head") for p in groups[name]])
    with pytest.raises(tg.ConfigError, match=r"is in 0 optimizer groups"):
        tg.check_param_coverage(model, [muon, adam])


def test_record_parameter_counts_and_flops():
    args = tg.parse_args(["--preset=2025-08-23"])
    with torch.device("meta"):
        model = tg.GPT(args)
    counts = tg.parameter_counts(model)
    attention = 3 * 768 * 768 + 768 * 768 + 12 * 6  # Q, K, V, out, head gate; layer 7 has no attention
    assert counts["matrices"] == 11 * attention + 12 * 2 * 768 * 3072
    assert counts["lm_head"] == 50304 * 768
    assert counts["embeddings"] == 50304 * 768 * (1 + 3)
    assert counts["scalars"] == 6 + 12 * 2 + 11 * 2  # skip weights, x0 lambdas, value lambdas
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    # matmul FLOPs: 6 per weight per token; attention adds 12 * H * hd * keys per attention layer
    no_attention = dataclasses.replace(args, window_blocks_start=1, window_blocks_end=1, seq_len=1)
    attention_flops = 11 * 12 * 768 * 1  # one key per query at T=1
    assert tg.flops_per_token(no_attention) == 6 * (counts["matrices"] + counts["lm_head"]) + attention_flops


def test_window_sizes_follow_the_pattern():
    args = tiny_args("--window_pattern=LSSL", "--num_layers=6")
    model = tg.GPT(args)
    assert [b.window for b in model.blocks] == list("LSSLLS")


@pytest.mark.parametrize("tokens", [False, True])
@pytest.mark.parametrize("window", [1, 3, 8, 20])
def test_mean_keys_per_query_counts_the_mask(window, tokens):
    """The attention term of flops_per_token (MFU): keys per query averaged over one document of 1024 tokens."""
    mask = tg.dense_mask(torch.zeros(1, 1024, dtype=torch.long), torch.tensor(window), tokens)
    assert tg.mean_keys_per_query(window, 1024, tokens) == pytest.approx(mask.sum().item() / 1024)
