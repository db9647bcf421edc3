"""
train_gpt.py: train a GPT-2-class model from scratch on FineWeb as fast as possible, in one file.

    python train_gpt.py --preset=cpu                      # tiny smoke run on CPU, seconds
    ./run.sh                                              # torchrun on every visible GPU, preset from the hardware
    torchrun --standalone --nproc_per_node=8 train_gpt.py --preset=record --seed=1
    python train_gpt.py --sample=logs/<run_id>/final.pt --prompt="The capital of France is"

Any Hyperparameters field can be set as --field=value. --preset=record is the newest record whose math is here:
modded-nanogpt's track-1 record of 2026-07-17 (3.2784 mean val loss at step 1390 in 79.7 s on 8xH100; also
--preset=2026-07-17), on any number of GPUs. --preset=2025-12-31 is the last record of 2025 (3.2789 at step 1825);
the defaults are the math of the record of 2025-08-23 (3.2787 at step 1695; also --preset=2025-08-23). Each is
checked against its record's code. Each trick is one flag; the first group is 2025-08-23's (on by default), the
second came in later records (off by default; the record presets, smear, polar, backout, bigram and stack turn
them on):
    rope_fraction      partial RoPE: rotary on this fraction of each head's dims, the rest position-free
    qk_norm            RMS-normalise queries and keys; attention scale is attn_scale
    mlp_act            the 4x MLP's activation: ReLU squared or GELU
    fused_mlp          on CUDA, ReLU² in the epilogue of a Triton matmul (x @ fc), its gradient in backward's
    zero_init_out      attention-out and MLP-down projections start at zero
    unet_skips         encoder half's outputs added to the mirrored decoder layers with learned weights
    x0_skip            each block mixes in the normalised embedding: x = a*x + b*x0, a and b learned per layer
    value_embeds       N extra embedding tables mixed into the values of the first N and last N layers
    attn_gate          per-head sigmoid gate on the attention output, computed from a few input channels
    logit_softcap      soft-cap on logits, softcap_form c*tanh(z/c), c*sigmoid(4z/c) or c*sigmoid((z+5)/7.5) (12-31)
    fp8_head           lm_head in FP8 through torch._scaled_mm ("auto": on for compute capability >= 8.9)
    no_attn_layers     layers without attention (no_mlp_layers: without MLP)
    window_pattern     sliding-window size per layer: S(hort) or L(ong), tiled over the layers
    norm_after_embed   RMSNorm right after the token embedding
    smear_gate         each position adds a gated fraction of the previous token's embedding (record 2025-09-18)
    muon_ortho         "polar": Polar Express instead of Newton-Schulz in Muon (record 2025-09-29)
    backout            subtract a learned fraction of the residual after 2/3 of the layers (record 2025-10-04)
    bigram_embed       hashed (previous token, token) table of vocab*N rows added before every block (2026-01-19)
    max_doc_len        a sequence packs documents, each cut at this many tokens (record 2025-12-31: 2048)
    window_tokens      a window of W blocks reaches W*128 tokens back from each query, not W whole blocks (2025-12-31)
    multi_token        each position also predicts the 2nd and 3rd token ahead, weights falling to 0 (2025-12-31)
    ve_gate            value embeddings enter through a sigmoid gate per head instead of lambdas (2025-12-31)
    sa_lambdas         a learned scalar on each layer's QKV weights and one on its output weights (2025-12-31)
    gated_skip         one skip connection (layer 3 -> 6) gated from the embedding, for the U-Net's (2025-12-31)
    key_offset         long-window layers' keys carry the previous token in their position-free dims (2025-12-31)
    yarn               YaRN: RoPE frequencies and the attention scale follow each growth of the window (2025-12-31)
    tied_embed_until   the embedding is lm_head's weight, untied into a copy at 2/3 of the run (2025-12-31)
    bigram_dim         the bigram table this wide, in the first channels after each attention (2026-07-17: 192)
    bigram_signs       each bigram row times a row of random signs picked by (previous ^ token) (2026-07-17)
    value_embed_std    value tables start random (std 0.01), not at zero (2026-07-17)
    ve_gate_mix        the value gate reads 6 channels of the input and 6 of the table (2026-07-17)
    attn_out_init      attention-out weights start uniform as V's, not at zero (2026-07-17)
    paired_heads       layers whose heads attend in pairs, over the sequence doubled (2026-07-17: 0, 2, 5, 9)
    pair_muon          Muon orthogonalises Q and K by pairs of heads (2026-07-17)
    xsa_layers         layers that remove a learned share of y along v, per head (XSA; 2026-07-17)
    attn_input_layer   later layers' attention reads this layer's output (2026-07-17: 7)
    sublayer_lambdas   x = a x + b f(x) per sublayer, x0 mixed in after attention (2026-07-17)
    mudd               the last layer and the output mix earlier states by per-token weights (MUDD; 2026-07-17)
    mtp_tail_grad      the last positions' gradient as 2026-07-17's loss kernel computes it
    fp8_mlp            the MLP's forward in FP8 with delayed scales, backward in bf16 (2026-07-17)
Attention is FlexAttention on CUDA (causal AND same document AND inside the window), the same mask as a dense
boolean mask on CPU. Hidden matrices train with Muon, embeddings/head/scalars with Adam.
"""
import collections
import contextlib
import copy
import dataclasses
import datetime
import difflib
import functools
import glob
import hashlib
import itertools
import json
import math
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import typing
import uuid
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

try:
    import triton
    import triton.language as tl
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # a CPU-only torch comes without Triton; only the CUDA path uses it
    triton = None

# -----------------------------------------------------------------------------
# Hyperparameters (defaults = the 8xH100 record recipe; presets below change many at once)


@dataclass
class Hyperparameters:
    # data
    train_files: str = "data/fineweb10B/fineweb_train_*.bin"
    val_files: str = "data/fineweb10B/fineweb_val_*.bin"
    val_tokens: int = 10_485_760  # fixed val set, the same for every world size (modded-nanogpt)
    val_seq_len: int = 4 * 64 * 1024  # val sequence length (record 2025-08-23); val_tokens must be a multiple
    tokens_per_step: int = 8 * 48 * 1024  # global batch; record 2025-08-23: 393,216 = 8 GPUs x 48K
    batch_schedule: str = ""  # "STEP:TOKENS,...": tokens_per_step from each STEP on ("" = constant)
    seq_len: int = 48 * 1024  # tokens per sequence; documents inside are separated by the attention mask
    micro_batch_seqs: int = 1  # sequences per forward pass per process; accumulation makes up the rest
    seqs_per_step: int = 0  # > 0: a step is this many sequences of tokens_per_step / seqs_per_step tokens, their length
    #                         following the batch schedule (record 2025-12-31: 8 sequences of 16K, 32K, 48K)
    align_to_doc: bool = True  # start every sequence at a document start (EOT), as record 2025-08-23 does
    max_doc_len: int = 0  # > 0: a sequence packs documents, each cut at this many tokens (0: one document's start)
    doc_len_schedule: str = ""  # "STEP:TOKENS,...": max_doc_len from each STEP on (record 2026-07-17: 896, then 2048)
    seed: int = 0  # init, and the shard order of every epoch after the first
    # model: GPT-2 124M
    vocab_size: int = 50304  # 50257 padded to a multiple of 128
    num_layers: int = 12
    model_dim: int = 768
    num_heads: int = 6
    head_dim: int = 128
    rope_fraction: float = 0.5  # record 2025-08-23: RoPE on half the head dims
    rope_base: float = 1024.0  # record 2025-08-23
    rope_ntk_scaling: bool = False  # grow rope_base (NTK-aware) as the long window grows
    qk_norm: bool = True
    attn_scale: float = 0.12  # record 2025-08-23 (Marin uses 1.35/sqrt(head_dim))
    mlp_act: Literal["relu2", "gelu"] = "relu2"
    fused_mlp: bool = True  # CUDA and relu2 only; the same math as the unfused ops, less memory traffic (README)
    zero_init_out: bool = True
    unet_skips: bool = True
    x0_skip: bool = True
    value_embeds: int = 3  # record 2025-08-23: 3 tables on layers 0-2 and 9-11
    value_embed_layout: str = ""  # the table each layer reads, "." for none ("12......012": 2025-12-31); "" = U-Net
    ve_gate: bool = False  # value tables start at 0 and enter v through a gate 2*sigmoid(W x[:12]) per head, no lambdas
    smear_gate: bool = False
    bigram_embed: int = 0  # rows = vocab * this; 0 = off (record 2026-01-19: 5)
    attn_gate: bool = True
    sa_lambdas: bool = False  # learned scalars on each layer's QKV and output weights, 0.5 and 1 at the start
    resid_lambda_init: float = 1.0  # x0_skip's weight on x at the start (record 2025-12-31: 1.1); on x0: 0
    qkv_init: float = 0.5  # Q, K, V weights start uniform with std qkv_init / sqrt(model_dim) (2025-12-31: 1)
    gated_skip: tuple[int, ...] = ()  # (i, j): layer i's output joins before layer j through a gate on x0 (2025-12-31)
    key_offset: bool = False  # long-window layers: keys' position-free dims are the previous token's (2025-12-31)
    yarn: bool = False  # YaRN: each time the long window grows, RoPE's frequencies and attention's scale follow
    tied_embed_until: float = 0  # > 0: the embedding is lm_head's weight until this fraction of the run, then a copy
    backout: bool = False
    # record 2026-07-17's model (each off by default)
    bigram_dim: int = 0  # > 0: the bigram table is this wide, enters the first channels at the embedding and after
    #                      each attention, hashed across documents (2026-07-17: 192); 0 = model_dim before each block
    bigram_signs: int = 0  # > 0: each bigram row times a row of this many random signs, by prev ^ token (2026-07-17:
    #                        8192)
    value_embed_std: float = 0  # > 0: value tables start normal with this std (2026-07-17: 0.01)
    ve_gate_mix: bool = False  # the value gate reads 6 channels of the input and 6 of the table (2026-07-17)
    attn_out_init: bool = False  # attention-out weights start uniform as V's do, not at zero (2026-07-17)
    paired_heads: tuple[int, ...] = ()  # layers whose heads attend in pairs over a doubled sequence (2026-07-17)
    pair_muon: bool = False  # Q and K are matrices of 2 heads each for Muon, not of all heads (2026-07-17)
    xsa_layers: tuple[int, ...] = ()  # layers that remove a learned part of y along v (XSA) (2026-07-17)
    attn_input_layer: int = -1  # >= 0: the later layers' attention reads this layer's output (2026-07-17: 7)
    sublayer_lambdas: bool = False  # x = a x + b sublayer(x) for attention and MLP each; x0 after attention
    mudd: bool = False  # the last layer and the output mix earlier layers' states by per-token weights (MUDD)
    logit_softcap: float = 30.0  # 0 = off; record 2025-08-23: 30*sigmoid(z/7.5)
    softcap_form: Literal["tanh", "sigmoid", "shifted"] = "sigmoid"  # shifted: c*sigmoid((z+5)/7.5) (2025-12-31)
    multi_token: bool = False  # each position also learns the 2nd and 3rd token ahead, weights by mtp_weights_at()
    mtp_tail_grad: bool = False  # the last positions' softmax gradient has all the weights, as 2026-07-17's kernel
    fp8_head: Literal["auto", "on", "off"] = "auto"  # auto: on for compute capability >= 8.9
    fp8_mlp: Literal["auto", "on", "off"] = "off"  # the MLP's forward in FP8, delayed scales (FP8MLP; 2026-07-17)
    fp8_head_scales: tuple[float, ...] = ()  # x, w, grad static scales times 448 (record 2025-12-31: 100, 1.6, 0.75);
    #                                          () = sqrt(model_dim), 448 / 2**9, 1 (record 2025-08-23)
    no_attn_layers: tuple[int, ...] = (7,)  # record 2025-08-23: no attention in layer 7
    no_mlp_layers: tuple[int, ...] = ()
    norm_after_embed: bool = True
    # attention windows, in 128-token blocks; alphabet: S = short window (long // 2), L = long window
    window_pattern: str = "LSSSLSSLSSSL"  # record 2025-08-23
    window_blocks_start: int = 1  # long window at step 0 (128 tokens)
    window_blocks_end: int = 14  # long window at the last step (1792 tokens), linear in between
    window_tokens: bool = False  # a window of W blocks reaches W*128 tokens back from each query, not W whole blocks
    window_schedule: tuple[int, ...] = ()  # the long window in equal stages of the scheduled steps, then
    #                                        window_blocks_end (record 2025-12-31: 3, 7, 11, then 13); () = linear
    val_window_blocks: int = 0  # > 0: the long window of the final validation (record 2025-12-31: 20)
    # optimizers: Muon for hidden matrices, Adam for the rest
    muon_lr: float = 0.05  # record 2025-08-23
    muon_momentum: float = 0.95  # record 2025-08-23, warmed up from muon_momentum_start
    muon_momentum_start: float = 0.85
    muon_momentum_warmup_steps: int = 300
    muon_momentum_cooldown_steps: int = 0  # the last N steps take it back to muon_momentum_start (2025-12-31: 50)
    muon_lr_muls: tuple[float, ...] = ()  # (attention, MLP in, MLP out) times muon_lr; () = max(1, rows/cols)**0.5
    muon_ortho: Literal["ns5", "polar"] = "ns5"  # Newton-Schulz quintic or Polar Express
    muon_row_equilibration: bool = False  # scale each gradient row to the RMS row norm before orthogonalising
    muon_plus: bool = False  # rescale the update to Frobenius norm sqrt(min(m, n))
    normuon: bool = False  # per-row second-moment normalisation of the update (NorMuon)
    normuon_beta2: float = 0.95  # record 2025-12-31
    muon_weight_decay: float = 0.0  # a weight decays by muon_weight_decay * muon_lr * its lr, both as scheduled
    cautious_wd: bool = False  # decay only where the update and the weight do not differ in sign (2025-12-31)
    embed_lr: float = 0.6  # Adam lrs of record 2025-08-23: 0.008 x 75 for embeddings, x 1 head, x 5 scalars
    head_lr: float = 0.008
    scalar_lr: float = 0.04
    adam_betas: tuple[float, ...] = (0.8, 0.95)  # record 2025-08-23
    adam_eps: float = 1e-10  # record 2025-08-23
    bigram_betas: tuple[float, ...] = (0.75, 0.95)  # the bigram table's Adam (record 2026-01-19; lr is embed_lr)
    bigram_weight_decay: float = 0.025  # cautious, times lr**2 (record 2026-01-19: 0.005 x wd_mul 5)
    adam_recipe: Literal["2025-08-23", "2025-12-31", "2026-07-17"] = "2025-08-23"  # the lrs above or ADAM_RECIPES
    adam_every: int = 1  # Adam steps every Nth step, on the N steps' gradients summed (record 2025-12-31: 2)
    adam_fp32_state: bool = False  # Adam's moments in fp32 for bf16 parameters too (record 2025-12-31)
    # schedule
    num_iterations: int = 1695  # record 2025-08-23
    cooldown_frac: float = 0.45  # record 2025-08-23: flat, then linear cooldown over the last 45%
    final_lr_frac: float = 0.1  # record 2025-08-23
    lr_peaks: tuple[float, ...] = (1.0,)  # lr before the cooldown, in equal stages (2025-12-31: 1, 1.52, 1.73)
    lr_stage_from_start: bool = False  # a stage's lr from its first step (2026-07-17), not the next (2025-12-31)
    extension_steps: int = 0  # the last N steps run at the schedules' final values (2025-12-31: 40 of 1825)
    # run
    val_loss_every: int = 125  # 0 = only at the end
    train_log_every: int = 25
    checkpoint_every: int = 0  # 0 = only the final checkpoint
    keep_checkpoints: int = 0  # keep the newest N step_*.pt of a run (0 = all)
    save_checkpoint: bool = True
    run_id: str = ""  # "" = a fresh unique id
    resume: str = ""  # checkpoint to continue from (its hyperparameters apply unless overridden here), or "auto":
    #                   this run_id's newest valid checkpoint if it has one, else a fresh start
    export: str = ""  # write the weights of --resume's checkpoint (bf16, with its hyperparameters) here and stop
    collective_timeout: float = 600  # seconds a rank waits for the others before the run stops (a dead/hung rank)
    device: str = ""  # "" = cuda:LOCAL_RANK if available, else cpu
    cpu_threads: int = 1  # threads per process on CPU; 1 keeps the math the same for any process count (0 = all)
    memory_cap_gib: float = 0  # cap this process's GPU memory, e.g. 24 to check a 24 GB card on a bigger one (0 = off)
    compile: bool = True
    compile_mode: str = ""  # torch.compile mode: "" (default), "max-autotune", ...
    warmup_steps: int = 10  # untimed compile steps on dummy data, then every state is reset
    profile_steps: int = 0  # torch.profiler over this many steps after two unprofiled ones (0 = off)
    check_finite: bool = True  # stop at a non-finite loss (tools/virtual_gpu.py turns it off: its values are not real)
    # sampling
    sample: str = ""  # checkpoint to sample from instead of training
    prompt: str = ""
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 50
    preset: str = ""


# The later records' tricks, each on top of record 2025-08-23 (what each record claims for it, and where ours
# differs on purpose: README's preset table)
LATER_TRICKS = {
    "smear": dict(smear_gate=True),  # record 2025-09-18
    "polar": dict(muon_ortho="polar", muon_lr=0.06),  # record 2025-09-29
    "backout": dict(backout=True),  # record 2025-10-04
    "bigram": dict(bigram_embed=5),  # record 2026-01-19; its Adam betas, lr and decay are the bigram_* defaults
}

# record 2025-12-31 (1825 steps, 3.2789 in 112.97 s on 8xH100), checked against its code in tests/test_record.py
RECORD_2025_12_31 = dict(
    max_doc_len=2048, seqs_per_step=8, seq_len=48 * 1024, tokens_per_step=8 * 2048 * 8,
    batch_schedule="595:262144,1190:393216", num_layers=11, no_attn_layers=(6,), window_pattern="SSSLSSSSSSL",
    value_embed_layout="12......012", ve_gate=True, sa_lambdas=True, resid_lambda_init=1.1, qkv_init=1.0,
    unet_skips=False, gated_skip=(3, 6), key_offset=True, yarn=True, attn_scale=0.1, tied_embed_until=2 / 3,
    smear_gate=True, backout=True, logit_softcap=23.0, softcap_form="shifted", multi_token=True,
    window_tokens=True, window_schedule=(3, 7, 11), window_blocks_end=13, val_window_blocks=20, muon_lr=0.023,
    muon_lr_muls=(2.0, 2.0, 4.0), muon_ortho="polar", normuon=True, muon_weight_decay=1.2, cautious_wd=True,
    muon_momentum_cooldown_steps=50, fp8_head_scales=(100.0, 1.6, 0.75), adam_recipe="2025-12-31",
    adam_eps=1e-8, adam_every=2, adam_fp32_state=True, num_iterations=1825, extension_steps=40, cooldown_frac=0.5,
    lr_peaks=(1.0, 1.52, 1.73), val_loss_every=250)

# record 2026-07-17 (1390 steps, 3.2784 in 79.7 s on 8xH100): its model, FP8 MLP, schedules and optimizer
# settings, checked against its code in tests/test_record.py (what differs: README)
MODEL_2026_07_17 = dict(
    num_layers=11, no_attn_layers=(6,), window_pattern="SSSLSSSSSSL", value_embeds=5,
    value_embed_layout=".01.....234", value_embed_std=0.01, ve_gate=True, ve_gate_mix=True, sa_lambdas=True,
    resid_lambda_init=1.1, qkv_init=0.5, attn_out_init=True, x0_skip=False, sublayer_lambdas=True, unet_skips=False,
    gated_skip=(3, 6), key_offset=True, yarn=True, attn_scale=0.1, smear_gate=True, logit_softcap=23.0,
    softcap_form="shifted", multi_token=True, window_tokens=True, bigram_embed=15, bigram_dim=192,
    bigram_signs=8192, paired_heads=(0, 2, 5, 9), xsa_layers=(1, 3, 4, 7, 8, 10), attn_input_layer=7, mudd=True,
    mtp_tail_grad=True, fp8_head_scales=(100.0, 1.6, 0.75), fp8_mlp="auto", pair_muon=True, adam_recipe="2026-07-17",
    normuon_beta2=0.9, muon_lr_muls=(1.0, 2.0, 4.0), adam_eps=1e-10)
RECORD_2026_07_17 = dict(
    RECORD_2025_12_31, **MODEL_2026_07_17, backout=False, num_iterations=1390, extension_steps=10,
    batch_schedule="460:262144,920:393216", max_doc_len=896, doc_len_schedule="460:2048", lr_stage_from_start=True,
    cooldown_frac=0.6, final_lr_frac=0.15)

PRESETS = {
    "record": RECORD_2026_07_17,  # the newest record whose math is here: 8xH100, or fewer GPUs accumulating
    "2026-07-17": RECORD_2026_07_17,
    "2025-12-31": RECORD_2025_12_31,
    "2025-08-23": {},  # the defaults (1695 steps, 3.2787 in 168.75 s on 8xH100), checked as 2025-12-31 is
    **LATER_TRICKS,  # each on top of the defaults
    "stack": {name: value for trick in LATER_TRICKS.values() for name, value in trick.items()},  # all of them
    # one 24 GB card: the record's math with 32 sequences a step instead of 8 (4K, 8K, 12K tokens: 32 accumulation
    # steps; documents are cut at 896 and 2048 tokens either way, only the sequence ends cut some elsewhere),
    # validation in 32K-token sequences; its peak on the virtual 4090 is in README
    "4090": dict(RECORD_2026_07_17, seqs_per_step=32, val_seq_len=32 * 1024),
    # the ~350M model of the 2.92 track; step count is a starting point, not yet tuned here
    "medium": dict(num_layers=16, model_dim=1024, num_heads=8, no_attn_layers=(), num_iterations=5000),
    # a tiny model that trains on CPU in seconds (smoke runs, tests)
    "cpu": dict(num_layers=4, model_dim=128, num_heads=2, head_dim=64, value_embeds=1,
                no_attn_layers=(), window_pattern="SL", window_blocks_end=2, seq_len=256, micro_batch_seqs=2,
                tokens_per_step=1024, val_tokens=16384, val_seq_len=256, num_iterations=60, cooldown_frac=0.3,
                muon_momentum_warmup_steps=20, val_loss_every=20,
                train_log_every=10, compile=False, warmup_steps=0),
}


class ConfigError(ValueError):
    pass


class RankFailure(RuntimeError):
    """Another rank died or stopped answering."""


def parse_value(name, text, kind):
    """Convert one --field=value string to the field's type; booleans take true/false/1/0 in any case, a Literal
    field one of its values."""
    choices = typing.get_args(kind) if typing.get_origin(kind) is Literal else ()
    with contextlib.suppress(ValueError):
        if kind is bool and text.lower() in ("1", "true", "0", "false"):
            return text.lower() in ("1", "true")
        if typing.get_origin(kind) is tuple:
            return tuple(typing.get_args(kind)[0](part) for part in text.split(",") if part.strip())
        if text in choices or not (choices or kind is bool):
            return text if choices else kind(text)
    expected = f"one of {', '.join(choices)}" if choices else f"a valid {getattr(kind, '__name__', kind)}"
    raise ConfigError(f"--{name}={text!r} is not {expected}")


def parse_args(argv):
    """The Hyperparameters of a command line (parse_command_line without the checkpoint it read)."""
    return parse_command_line(argv)[0]


def parse_command_line(argv):
    """Hyperparameters from defaults, then the checkpoint's (--resume) or the preset's, then --field=value.
    Resuming with fields that change the model's shape is refused, naming them. -> (Hyperparameters, the
    checkpoint --resume names as (path, its contents) or None): the one place a checkpoint to resume is read."""
    kinds = typing.get_type_hints(Hyperparameters)
    overrides = {}
    for arg in argv:
        name, eq, text = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or not eq:
            raise ConfigError(f"argument {arg!r} is not of the form --field=value")
        if name not in kinds:
            close = difflib.get_close_matches(name, kinds, n=1)
            raise ConfigError(f"unknown field --{name}" + (f" (did you mean --{close[0]}?)" if close else ""))
        overrides[name] = parse_value(name, text, kinds[name])
    args = Hyperparameters()
    checkpoint = find_checkpoint(overrides.get("resume", ""), overrides.get("run_id", ""))
    saved = checkpoint_hyperparameters(checkpoint[1]) if checkpoint else None
    if saved:
        args = dataclasses.replace(args, **{**saved, "run_id": ""})
    preset = overrides.get("preset", "")
    if preset not in PRESETS and preset:
        raise ConfigError(f"unknown --preset={preset!r}; choose one of {', '.join(PRESETS)}")
    args = dataclasses.replace(args, **{**PRESETS.get(preset, {}), **overrides})
    validate(args)
    if saved and not args.export and (changed := shape_changes(Hyperparameters(**saved), args)):
        raise ConfigError(f"{checkpoint[0]} holds another model: {', '.join(changed)} differ from the ones it was"
                          " trained with; drop them (and --preset) to continue it")
    return args, checkpoint


def shape_changes(saved, args):
    """The fields on which args and a checkpoint's hyperparameters differ that change a parameter's shape."""
    shapes = lambda a: {k: v.shape for k, v in GPT(a).state_dict().items()}
    with torch.device("meta"):
        reference = shapes(saved)
        return [f"--{name}={getattr(args, name)!r} (trained: {getattr(saved, name)!r})"
                for name in typing.get_type_hints(Hyperparameters) if getattr(args, name) != getattr(saved, name)
                and shapes(dataclasses.replace(saved, **{name: getattr(args, name)})) != reference]


def validate(args):
    """Catch impossible settings at start-up, naming the field, instead of deep inside the run."""
    positive = ("seq_len", "micro_batch_seqs", "tokens_per_step", "val_seq_len", "val_tokens", "train_log_every",
                "num_layers", "model_dim", "num_heads", "head_dim", "num_iterations", "temperature",
                "collective_timeout")
    at_least_0 = ("val_loss_every", "checkpoint_every", "keep_checkpoints", "warmup_steps", "profile_steps", "top_k",
                  "max_new_tokens", "cpu_threads", "memory_cap_gib", "max_doc_len", "seqs_per_step",
                  "val_window_blocks", "muon_momentum_cooldown_steps")
    L = args.num_layers
    checks = [
        *((name, getattr(args, name) > 0, "positive") for name in positive),
        *((name, getattr(args, name) >= 0, "0 or more") for name in at_least_0),
        ("vocab_size", args.vocab_size > EOT, f"more than {EOT} (the GPT-2 tokens)"),
        ("window_pattern", args.window_pattern and set(args.window_pattern) <= {"S", "L"}, "a string of S and L"),
        ("no_attn_layers", all(0 <= i < L for i in args.no_attn_layers), f"layer indices in 0..{L - 1}"),
        ("no_mlp_layers", all(0 <= i < L for i in args.no_mlp_layers), f"layer indices in 0..{L - 1}"),
        ("value_embeds", 0 <= 2 * args.value_embeds <= L, f"between 0 and num_layers/2 = {L // 2}"),
        ("rope_fraction", 0 <= args.rope_fraction <= 1, "between 0 and 1"),
        ("value_embed_layout", not args.value_embed_layout or len(args.value_embed_layout) == L and set(
            args.value_embed_layout) <= set("." + "0123456789"[:args.value_embeds]),
         f"empty or a character per layer ({L}): a table index below value_embeds or '.'"),
        ("gated_skip", args.gated_skip == () or len(args.gated_skip) == 2 and 0 <= args.gated_skip[0]
         < args.gated_skip[1] < L, f"empty or two layers i < j in 0..{L - 1}"),
        ("yarn", not (args.yarn and args.rope_ntk_scaling), "false with --rope_ntk_scaling (one or the other)"),
        *((name, all(0 <= i < L for i in getattr(args, name)), f"layer indices in 0..{L - 1}")
          for name in ("paired_heads", "xsa_layers")),
        ("paired_heads", not args.paired_heads or args.num_heads % 2 == 0, "empty with an odd num_heads"),
        ("xsa_layers", not set(args.xsa_layers) & set(args.paired_heads), "layers not in --paired_heads"),
        ("pair_muon", not args.pair_muon or args.num_heads % 2 == 0, "false with an odd num_heads"),
        ("bigram_dim", 0 <= args.bigram_dim <= args.model_dim, f"between 0 and model_dim = {args.model_dim}"),
        ("attn_input_layer", -1 <= args.attn_input_layer < L, f"-1 (off) or a layer in 0..{L - 1}"),
        ("sublayer_lambdas", not (args.sublayer_lambdas and args.x0_skip), "false with --x0_skip (it mixes x0 in)"),
        ("bigram_dim", not args.bigram_dim or args.sublayer_lambdas and args.bigram_embed,
         "0 without --sublayer_lambdas and --bigram_embed (it enters after attention)"),
        ("mudd", not args.mudd or args.bigram_dim and args.value_embeds and args.gated_skip
         and 0 <= args.attn_input_layer < L - 1 and args.model_dim == args.num_heads * args.head_dim
         and args.num_heads % 2 == 0 and L - 1 not in args.no_attn_layers + args.no_mlp_layers,
         "false without --bigram_dim, --value_embeds, --gated_skip and --attn_input_layer below the last layer (what"
         " it mixes), an even num_heads of model_dim and a last layer with attention and MLP"),
        ("tied_embed_until", 0 <= args.tied_embed_until <= 1, "between 0 and 1"),
        ("extension_steps", 0 <= args.extension_steps < args.num_iterations, "0 or more and below num_iterations"),
        ("window_schedule", all(w >= 1 for w in args.window_schedule), "blocks, each at least 1"),
        ("lr_peaks", len(args.lr_peaks) > 0, "one or more multipliers"),
        ("muon_lr_muls", len(args.muon_lr_muls) in (0, 3), "empty or three: attention, MLP in, MLP out"),
        ("adam_every", args.adam_every >= 1, "at least 1"),
        ("seqs_per_step", not args.seqs_per_step or args.micro_batch_seqs == 1 and all(
            tokens % (args.seqs_per_step * BLOCK) == 0 for _, tokens in parse_batch_schedule(args)),
         "0, or with --micro_batch_seqs=1 a divisor of every batch size into sequences of whole 128-token blocks"),
        *((name, getattr(args, name) in typing.get_args(kind), f"one of {', '.join(typing.get_args(kind))}")
          for name, kind in typing.get_type_hints(Hyperparameters).items() if typing.get_origin(kind) is Literal),
        ("doc_len_schedule", not args.doc_len_schedule or args.max_doc_len, "empty without --max_doc_len"),
        ("window_blocks_start", 1 <= args.window_blocks_start, "at least 1"),
        ("window_blocks_end", args.window_blocks_start <= args.window_blocks_end, "at least window_blocks_start"),
        ("cooldown_frac", 0 <= args.cooldown_frac <= 1, "between 0 and 1"),
        ("val_tokens", args.val_seq_len > 0 and args.val_tokens % args.val_seq_len == 0,
         f"a positive multiple of val_seq_len = {args.val_seq_len}"),
        ("seq_len", args.seq_len % BLOCK == 0, f"a multiple of the {BLOCK}-token attention block"),
        ("val_seq_len", args.val_seq_len % BLOCK == 0, f"a multiple of the {BLOCK}-token attention block"),
        ("num_layers", args.num_layers >= 2, "at least 2"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise ConfigError(f"--{name}={getattr(args, name)!r} must be {expected}")
    parse_batch_schedule(args)
    if not all(n > 0 for _, n in parse_schedule(args, "doc_len_schedule", args.max_doc_len or 1)[1:]):
        raise ConfigError(f"--doc_len_schedule={args.doc_len_schedule!r} must be lengths above 0")


def parse_schedule(args, name, first):
    """Field `name`, 'STEP:VALUE,...' -> sorted [(step, value)], starting with (0, first)."""
    stages = {0: first}
    for part in filter(None, getattr(args, name).replace(" ", "").split(",")):
        step, colon, value = part.partition(":")
        if not (colon and step.isdigit() and value.isdigit()):
            raise ConfigError(f"--{name}: {part!r} is not STEP:VALUE (e.g. 0:196608,500:393216)")
        stages[int(step)] = int(value)
    return sorted(stages.items())


def parse_batch_schedule(args):
    return parse_schedule(args, "batch_schedule", args.tokens_per_step)


# -----------------------------------------------------------------------------
# Distributed setup


def setup_distributed(device_name="", cpu_threads=1, timeout_s=600):
    """torchrun's environment when present (NCCL on CUDA, gloo on CPU), else one process. -> rank, world, device

    On CPU every process runs cpu_threads threads: ATen cuts a large sum into one chunk per thread, so the
    rounding of e.g. a scalar's gradient depends on the thread count, and early training amplifies a last-bit
    difference to ~1e-3 in the loss within 10 steps. One thread per process makes 1 and N processes agree."""
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not device_name:
        device_name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif cpu_threads:
        torch.set_num_threads(cpu_threads)
    if world_size > 1 and not dist.is_initialized():  # a collective that waits timeout_s for a rank fails
        try:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, dist.DistBackendError):
            restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
            if restarted and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
                raise RankFailure("torchrun restarted the workers on its old rendezvous store, where the dead ones'"
                                  " addresses still are (pytorch issue #135712): start torchrun with"
                                  " TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1") from None
            raise
    return rank, world_size, device


# -----------------------------------------------------------------------------
# Data: shards and loader

SHARD_MAGIC, SHARD_VERSION, HEADER_INTS = 20240520, 1, 256  # modded-nanogpt's FineWeb shard format
EOT = 50256  # GPT-2 <|endoftext|>: starts every document in a shard


class ShardError(ValueError):
    pass


def write_shard(path, tokens):
    """Write tokens as a shard atomically (tmp file + rename), so a crash never leaves half a shard."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise ShardError(f"{path}: token ids must fit in uint16 (0..65535)")
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[:3] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.uint16).tobytes())
    os.replace(tmp, path)


def read_shard(path):
    """Memory-map a shard's tokens (uint16) after checking magic, version and length against the file size."""
    size = os.path.getsize(path)
    if size < HEADER_INTS * 4:
        raise ShardError(f"{path}: {size} bytes is shorter than the {HEADER_INTS * 4}-byte shard header")
    header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
    if header[0] != SHARD_MAGIC:
        raise ShardError(f"{path}: magic number {header[0]} is not {SHARD_MAGIC}; not a token shard")
    if header[1] != SHARD_VERSION:
        raise ShardError(f"{path}: shard version {header[1]} is not supported (expected {SHARD_VERSION})")
    n_tokens, n_stored = int(header[2]), (size - HEADER_INTS * 4) // 2
    if n_stored != n_tokens or (size - HEADER_INTS * 4) % 2:
        raise ShardError(f"{path}: header says {n_tokens} tokens but the file holds {(size - HEADER_INTS * 4) / 2:g}"
                         " (truncated or corrupt download? delete it and fetch it again)")
    return np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_INTS * 4, shape=(n_tokens,))


class TokenStream:
    """The global stream of training sequences over shards, cut into optimizer steps.

    Every rank walks the same cursor over all sequences of a step and keeps its own contiguous share, so the
    ranks' slices are disjoint and together are exactly the 1-process stream. The first epoch reads the shards
    in sorted order, as the records do; later epochs in an order shuffled from the seed. The cursor (epoch,
    shard, position) is the loader's whole state, saved in checkpoints."""

    def __init__(self, pattern, seq_len, micro_batch_seqs, seed=0, align_to_doc=False, rank=0, world_size=1,
                 max_doc_len=0):
        self.files = sorted(glob.glob(pattern))
        if not self.files:
            raise ShardError(f"no shard matches {pattern!r} (download with `python cached_fineweb10B.py 9`"
                             " or set --train_files)")
        self.seq_len, self.micro_batch_seqs, self.seed = seq_len, micro_batch_seqs, seed
        self.align_to_doc, self.max_doc_len = align_to_doc or max_doc_len > 0, max_doc_len
        self.rank, self.world_size = rank, world_size
        self.load_state_dict(dict(epoch=0, shard=0, pos=0))

    def state_dict(self):
        return dict(epoch=self.epoch, shard=self.shard, pos=self.pos)

    def load_state_dict(self, state):
        self.epoch, self.shard, self.pos = state["epoch"], state["shard"], state["pos"]
        n = len(self.files)
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.epoch else np.arange(n)
        self.tokens = read_shard(self.files[self.order[self.shard]])
        self.doc_starts = np.flatnonzero(self.tokens == EOT) if self.align_to_doc else None

    def _next_shard(self):
        last = self.shard + 1 == len(self.files)
        self.load_state_dict(dict(epoch=self.epoch + last, shard=0 if last else self.shard + 1, pos=0))

    def _sequence_spans(self):
        """The next seq_len + 1 tokens (inputs and shifted targets) as [(start, end)] spans of the shard, and the
        cursor after them; None past the shard's end. One span from the cursor, or from the next document start
        (a shard without any, e.g. one book, is read straight through); with max_doc_len (record 2025-12-31),
        documents from the next start on, each cut at max_doc_len tokens, the last one where the tokens are
        complete, and the cursor at the end of the last: the next sequence starts at the next document."""
        i = np.searchsorted(self.doc_starts, self.pos) if self.align_to_doc and len(self.doc_starts) else None
        if i is None or not self.max_doc_len:
            start = self.pos if i is None else self.doc_starts[i] if i < len(self.doc_starts) else len(self.tokens)
            end = start + self.seq_len + 1
            return ([(start, end)], end - 1) if end <= len(self.tokens) else None
        spans, need, starts = [], self.seq_len + 1, self.doc_starts
        for j in range(i, len(starts)):
            end = starts[j + 1] if j + 1 < len(starts) else len(self.tokens)
            spans.append((starts[j], min(end, starts[j] + self.max_doc_len, starts[j] + need)))
            need -= spans[-1][1] - starts[j]
            if not need:
                return spans, spans[-1][1]
        return None

    def _step_fits(self, tokens_per_step):
        """Record 2025-08-23: a step whose tokens might not fit (twice over when aligned) starts the next shard.
        Record 2025-12-31 (max_doc_len) moves on only when a sequence does not fit."""
        if self.max_doc_len:
            return True
        return self.pos + tokens_per_step * (2 if self.align_to_doc else 1) + 1 < len(self.tokens)

    def _next_sequence(self):
        for _ in range(2 * len(self.files) + 1):
            if (found := self._sequence_spans()) is not None:
                spans, self.pos = found
                return np.concatenate([self.tokens[start:end] for start, end in spans])
            self._next_shard()
        raise ShardError(f"no shard among {self.files[0]}... holds a sequence of {self.seq_len + 1} tokens")

    def next_step(self, tokens_per_step, seq_len=None, max_doc_len=None):
        """This rank's micro-batches for one optimizer step: an int64 array (accum, micro_batch_seqs, seq_len+1);
        seq_len, if given, from this step on (record 2025-12-31's sequences grow with its batch), and so
        max_doc_len (record 2026-07-17's documents are cut at 896 tokens, then 2048)."""
        self.seq_len = seq_len or self.seq_len
        self.max_doc_len = max_doc_len or self.max_doc_len
        accum = grad_accum_steps(tokens_per_step, self.world_size, self.micro_batch_seqs * self.seq_len)
        per_rank = accum * self.micro_batch_seqs
        if not self._step_fits(tokens_per_step):
            self._next_shard()
        sequences = [self._next_sequence() for _ in range(per_rank * self.world_size)]
        mine = sequences[self.rank * per_rank:(self.rank + 1) * per_rank]
        return np.stack(mine).astype(np.int64).reshape(accum, self.micro_batch_seqs, self.seq_len + 1)

    def first_shard_report(self, tokens_per_step, run_tokens):
        """What one epoch reads of the first shard, walking a copy of the cursor as next_step does (aligned, a
        sequence reads seq_len + 1 tokens from a document start and skips the rest of a longer document), and
        the document lengths that explain it. -> log lines, with a warning if an epoch skips over half."""
        probe, per_step = copy.copy(self), tokens_per_step // self.seq_len
        probe.load_state_dict(dict(epoch=0, shard=0, pos=0))
        n, read = len(probe.tokens), np.zeros(len(probe.tokens), dtype=bool)
        for i in itertools.count():  # a step's first sequence checks that the step fits, as next_step does
            found = probe._sequence_spans() if i % per_step or probe._step_fits(tokens_per_step) else None
            if found is None:
                break
            for start, end in found[0]:
                read[start:end] = True
            probe.pos = found[1]
        lengths = np.diff(np.unique(np.concatenate([[0], np.flatnonzero(probe.tokens == EOT), [n]])))
        fraction, total = read.sum() / n, sum(len(read_shard(f)) for f in self.files)
        cut = ("max_doc_len", self.max_doc_len) if self.max_doc_len else ("seq_len", self.seq_len)
        lines = [f"train data: an epoch reads {read.sum():,} of the {n:,} tokens of {self.files[0]} ({fraction:.1%},"
                 f" align_to_doc={self.align_to_doc}, max_doc_len={self.max_doc_len}); the run trains on"
                 f" {run_tokens:,} tokens, about {run_tokens / max(fraction * total, 1):.2f} epochs of the {total:,}"
                 f" in {len(self.files)} shard(s)",
                 f"train data: {len(lengths):,} documents in {self.files[0]}, median {np.median(lengths):,.0f} tokens,"
                 f" 90th percentile {np.percentile(lengths, 90):,.0f}, {(lengths > cut[1]).sum():,} longer"
                 f" than {cut[0]}={cut[1]}"]
        if fraction < 0.5:
            fix = (f"--align_to_doc=false{' --max_doc_len=0' * bool(self.max_doc_len)}, best after re-tokenizing"
                   f" with data/tokenize_shards.py --max_doc_tokens={cut[1]} (long documents split, the pieces"
                   " shuffled)" if self.align_to_doc else "shards of more tokens")
            lines.append(f"warning: an epoch skips {1 - fraction:.1%} of {self.files[0]}; to read all of it use {fix}")
        return lines


def grad_accum_steps(tokens_per_step, world_size, micro_batch_tokens):
    if tokens_per_step % (world_size * micro_batch_tokens):
        raise ConfigError(f"tokens_per_step={tokens_per_step} is not a multiple of world_size={world_size} x "
                          f"micro-batch tokens={micro_batch_tokens} (micro_batch_seqs x seq_len); change one of them")
    return tokens_per_step // (world_size * micro_batch_tokens)


def load_val_sequences(pattern, val_tokens, seq_len):
    """The first val_tokens tokens of the val shards as val_tokens // seq_len sequences (+1 token each for the
    targets): the same set for every world size."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise ShardError(f"no shard matches {pattern!r} (set --val_files)")
    n_seqs = val_tokens // seq_len
    need, parts = n_seqs * seq_len + 1, []
    for f in files:
        parts.append(read_shard(f)[:need - sum(map(len, parts))])
    tokens = np.concatenate(parts).astype(np.int64)
    if len(tokens) < need:
        raise ShardError(f"{pattern} holds {len(tokens)} tokens, fewer than val_tokens={val_tokens};"
                         " lower --val_tokens")
    return np.lib.stride_tricks.sliding_window_view(tokens, seq_len + 1)[::seq_len]  # (n_seqs, seq_len + 1)


def to_device(array, device):
    """numpy -> device tensor; on CUDA through pinned memory without blocking, so the host never waits for
    the GPU (a copy from pageable memory would wait for the queued kernels: a hidden sync every step)."""
    tensor = torch.from_numpy(np.require(array, requirements="CW"))  # copies read-only views (val sequences)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


# -----------------------------------------------------------------------------
# Attention masks: one mask function, as a FlexAttention BlockMask on CUDA and a dense mask on CPU

BLOCK = 128  # FlexAttention block size; windows are counted in these blocks


def document_ids(idx):
    """(B, T) document index of each token: a running count of EOT, which starts every document."""
    return (idx == EOT).cumsum(dim=1)


def make_mask_mod(docs, window_blocks, tokens=False):
    """mask(b, h, q, k) = causal AND same document AND fewer than window_blocks blocks back (block-granular, as
    record 2025-08-23 counts its windows), or with `tokens` at most window_blocks * 128 tokens back (as record
    2025-12-31's FlashAttention window); window_blocks is a 0-d tensor, so growing it does not recompile."""
    def mask_mod(b, h, q, k):
        inside = q - k <= window_blocks * BLOCK if tokens else q // BLOCK - k // BLOCK < window_blocks
        return (k <= q) & (docs[b, q] == docs[b, k]) & inside
    return mask_mod


def dense_mask(docs, window_blocks, tokens=False):
    """The mask function evaluated at every (q, k): (B, 1, T, T) bool for scaled_dot_product_attention."""
    B, T = docs.shape
    pos = torch.arange(T, device=docs.device)
    b = torch.arange(B, device=docs.device)[:, None, None, None]
    return make_mask_mod(docs, window_blocks, tokens)(b, 0, pos[:, None], pos[None, :])


def block_mask(docs, window_blocks, tokens=False):
    """BlockMask from document ids at 128-token granularity, without evaluating the mask token by token.

    A (q-block, k-block) pair is skipped if no token pair passes, 'full' if all do (the kernel then skips the
    mask function) and 'partial' otherwise. Documents are contiguous and windows count whole blocks, so the
    k-blocks a q-block Q sees are one range [Q - n_any + 1, Q] whose full ones are [Q - n_full, Q - 1]; the
    q-blocks that see a k-block K (for the backward) are likewise [K, K + n_any - 1] and [K + 1, K + n_full]. A
    window of W blocks counted in tokens reaches into one block more than W whole blocks do, partly.
    Counts and index lists are comparisons, sums and aranges: no sort, which inductor would unroll into a
    huge kernel (README: Checking the GPU path)."""
    B, T = docs.shape
    n = T // BLOCK
    blocks = docs.view(B, n, BLOCK)
    first, last = blocks[..., 0], blocks[..., -1]  # (B, n) document of each block's first and last token
    rows, j = torch.arange(n, device=docs.device)[:, None], torch.arange(n, device=docs.device)  # (n, 1), (n,)
    reach = window_blocks + 1 if tokens else window_blocks  # k-blocks back that hold a token inside the window
    near = (j <= rows) & (rows - j < reach)  # (n_q, n_k) causal and inside the window
    any_pass = near & (last[:, None, :] >= first[:, :, None])  # (B, n_q, n_k)
    all_pass = near & (j < rows) & (first[:, None, :] == last[:, :, None])
    if tokens:  # the block reached only in part is never full
        all_pass &= rows - j < window_blocks

    def ordered(n_any, n_full, partial_start, full_start):
        """Counts (B, n) and list starts (B, n, 1) -> partial and full counts (B, 1, n) and index lists
        (B, 1, n, n) as BlockMask takes them; each row's own (diagonal) block leads its partial list."""
        partial = torch.where(j == 0, rows, partial_start + j)
        as_list = lambda idx: idx.clamp(0, n - 1).to(torch.int32)[:, None]
        return ((n_any - n_full).to(torch.int32)[:, None], as_list(partial),
                n_full.to(torch.int32)[:, None], as_list(full_start + j))
    n_any, n_full = any_pass.sum(-1), all_pass.sum(-1)  # per q-block: partial = [Q - n_any + 1, Q - n_full - 1] + Q
    kv = ordered(n_any, n_full, rows - n_any[..., None], rows - n_full[..., None])
    m_any, m_full = any_pass.sum(-2), all_pass.sum(-2)  # per k-block: partial = K + [K + m_full + 1, K + m_any - 1]
    qs = ordered(m_any, m_full, rows + m_full[..., None], (rows + 1).expand(B, n, 1))
    return BlockMask((T, T), *kv, *qs, (BLOCK, BLOCK), make_mask_mod(docs, window_blocks, tokens))


@functools.cache
def compiled_flex_attention():
    """flex_attention compiled on its own, for an eager model (made at first use: compiling costs seconds)."""
    return torch.compile(flex_attention, dynamic=False)


def attention(q, k, v, mask, scale):
    """(B, T, H, hd) in and out; mask is a BlockMask (flex) or a dense (B, 1, T, T) bool tensor."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
    if isinstance(mask, BlockMask):  # inside a compiled model flex_attention is traced into the graph directly
        flex = flex_attention if torch.compiler.is_compiling() else compiled_flex_attention()
        y = flex(q, k, v, block_mask=mask, scale=scale)
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return y.transpose(1, 2)


def build_masks(idx, windows, flex=None, tokens=False, paired=False):
    """One mask per distinct window: {"L": mask, "S": mask}; windows = int tensor [long, short] in blocks, counted
    in tokens with `tokens` (window_tokens). BlockMasks for FlexAttention on CUDA (flex=None), dense masks
    elsewhere. paired adds "L2" and "S2" over the doubled sequence of paired_heads (each token twice; the window
    counts positions there, as record 2026-07-17's)."""
    docs = document_ids(idx)
    build = block_mask if (idx.is_cuda if flex is None else flex) else dense_mask
    masks = {"L": build(docs, windows[0], tokens), "S": build(docs, windows[1], tokens)}
    if paired:
        docs = docs.repeat_interleave(2, dim=1)
        masks.update(L2=build(docs, windows[0], tokens), S2=build(docs, windows[1], tokens))
    return masks


# -----------------------------------------------------------------------------
# FP8 lm_head


SHIFTED_SOFTCAP = (5.0, 7.5)  # record 2025-12-31: 23*sigmoid((l + 5) / 7.5), shift and scale


def softcap(logits, c, form):
    """Soft-capped logits: c*tanh(l/c); c*sigmoid(l/(c/4)) = c/2*tanh(2l/c) + c/2 (record 2025-08-23:
    30*sigmoid(l/7.5)); or "shifted", c*sigmoid((l + 5)/7.5), asymmetric (record 2025-12-31: c = 23); c = 0:
    uncapped."""
    if c and form == "tanh":
        return c * torch.tanh(logits / c)
    if c and form == "shifted":
        return c * torch.sigmoid((logits + SHIFTED_SOFTCAP[0]) / SHIFTED_SOFTCAP[1])
    return c * torch.sigmoid(logits / (c / 4)) if c else logits


def softcap_slope(z, c, form):
    """dz/dlogits, from the capped logits z = softcap(logits, c, form)."""
    if not c:
        return 1
    s = z / c  # in place after this: eager runs hold two (B*T, V) tensors here, not four
    scale = SHIFTED_SOFTCAP[1] if form == "shifted" else c / 4
    return s.square_().neg_().add_(1) if form == "tanh" else (1 - s).mul_(s).mul_(c / scale)


def future_targets(targets, weights):
    """Multi-token prediction (record 2025-12-31, @varunneal): (B, T) targets and K weights -> the next K tokens
    of each position (B*T, K) and their weights, 0 past a sequence's end (not at documents, as in the record)."""
    (B, T), K = targets.shape, weights.numel()
    ids = F.pad(targets, (0, K - 1)).unfold(1, K, 1)  # (B, T, K): token t + k at [b, t, k]
    inside = torch.arange(T, device=targets.device)[:, None] + torch.arange(K, device=targets.device) < T
    return ids.reshape(-1, K), (weights * inside).expand(B, T, K).reshape(-1, K)


def multi_token_loss(z, targets, weights, tail_grad=False):
    """Capped logits z (B*T, V) of each position against the next K tokens, weighted, summed over positions.
    tail_grad (mtp_tail_grad): the same value, and the gradient of record 2026-07-17's loss kernel, whose
    softmax term carries all K weights also at the last positions, where targets past the end have none."""
    ids, inside = future_targets(targets, weights)
    lse = torch.logsumexp(z, dim=1, keepdim=True)
    loss = (inside * (lse - z.gather(1, ids))).sum()
    if tail_grad:
        past_end = (weights.sum() - inside.sum(1, keepdim=True)) * lse
        loss = loss + (past_end - past_end.detach()).sum()
    return loss


class FP8HeadLoss(torch.autograd.Function):
    """The training loss through the FP8 head: softcapped cross-entropy, summed and divided by B, over x @ w.T
    computed by torch._scaled_mm with x and w in e4m3. The logits' gradient is computed with the loss and kept
    in e5m2, so backward never reads the logits (bf16, twice its size) again (what that saves: README's performance
    table). Static scales as record 2025-08-23's FP8 head: x / (sqrt(D)/448), w / 2**-9, and
    the gradient / (1/448/B), since a summed loss's logit gradient is at most 1 (here 1/B); or `scales` / 448 (the
    gradient's / B too)."""

    @staticmethod
    def forward(ctx, x, w, targets, B, c, form, mtp_weights=None, scales=(), tail_grad=False):
        x_scale, w_scale, grad_scale = (s / 448 for s in scales or (x.size(1) ** 0.5, 448 * 2 ** -9, 1))
        grad_scale = grad_scale / B
        x_f8 = (x / x_scale).to(torch.float8_e4m3fn)
        w_f8 = (w / w_scale).to(torch.float8_e4m3fn)
        scales = [x.new_full((), s, dtype=torch.float32) for s in (x_scale, w_scale, grad_scale)]  # no host copy
        logits = torch._scaled_mm(x_f8, w_f8.T, scale_a=scales[0], scale_b=scales[1], out_dtype=torch.bfloat16,
                                  use_fast_accum=True)
        z = softcap(logits.float(), c, form)
        lse = torch.logsumexp(z, dim=1, keepdim=True)
        if mtp_weights is None:
            loss = (lse.squeeze(1) - z.gather(1, targets[:, None]).squeeze(1)).sum() / B
            p = (z - lse).exp_()
            p = torch.where(torch.arange(z.size(1), device=z.device) == targets[:, None], p - 1, p)
        else:  # a row's gradient: its weights' sum times softmax, minus each weight at its token, by comparison
            ids, weights = future_targets(targets.view(B, -1), mtp_weights)  # (a scatter would not fuse: it
            loss = (weights * (lse - z.gather(1, ids))).sum() / B  # writes a (B*T, V) fp32 tensor, 9 GiB at 48K)
            cols = torch.arange(z.size(1), device=z.device)
            p = (z - lse).exp_().mul_(mtp_weights.sum() if tail_grad else weights.sum(1, keepdim=True))
            for k in range(ids.size(1)):
                p = p.sub_(torch.where(cols == ids[:, k, None], weights[:, k, None], 0))
        grad = p.mul_(softcap_slope(z, c, form)).div_(B).to(torch.bfloat16)  # bf16, as the record's op gets it
        grad_f8 = (grad / grad_scale).to(torch.float8_e5m2)
        ctx.save_for_backward(x_f8, w_f8, grad_f8, *scales)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        x_f8, w_f8, grad_f8, scale_x, scale_w, scale_g = ctx.saved_tensors
        scale_g = scale_g * grad_loss  # the loss's own gradient (1 in training) folds into the scale
        grad_x = torch._scaled_mm(grad_f8, w_f8.T.contiguous().T, scale_a=scale_g, scale_b=scale_w,
                                  out_dtype=torch.bfloat16)
        grad_w = torch._scaled_mm(x_f8.T.contiguous(), grad_f8.T.contiguous().T, scale_a=scale_x, scale_b=scale_g,
                                  out_dtype=torch.float32).T
        return grad_x, grad_w, None, None, None, None, None, None, None


def fp8_on(setting, device):
    """fp8_head, fp8_mlp: "on", "off", or "auto" = on where the GPU has FP8 tensor cores (compute capability >= 8.9)."""
    if setting == "auto":
        return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
    return setting == "on"


# -----------------------------------------------------------------------------
# ReLU² MLP kernel (CUDA): the hidden activations go through memory once each way, not three times


if triton is not None:
    @triton.jit
    def relu2_epilogue(c, out_desc, aux_desc, m, n, FORWARD: tl.constexpr):
        """Forward: out = pre = c, aux = relu(pre)². Backward: out = c * 2 relu(aux), aux = pre. Rounded as the
        unfused ops round: c to bf16 as cuBLAS returns it, the ReLU² math in fp32 as inductor does it. The ReLU
        keeps NaN as F.relu does (tl.maximum's default is the GPU's maxnum, which turns NaN into 0: a NaN weight
        would become a dead unit instead of a non-finite loss)."""
        c = c.to(tl.bfloat16)
        if FORWARD:
            out_desc.store([m, n], c)
            r = tl.maximum(c.to(tl.float32), 0, propagate_nan=tl.PropagateNan.ALL)
            aux_desc.store([m, n], (r * r).to(tl.bfloat16))
        else:
            r = tl.maximum(aux_desc.load([m, n]).to(tl.float32), 0, propagate_nan=tl.PropagateNan.ALL)
            out_desc.store([m, n], (c.to(tl.float32) * (2 * r)).to(tl.bfloat16))

    @triton.jit
    def mm_relu2_kernel(a_desc, b_desc, out_desc, aux_desc, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr, PROGRAMS: tl.constexpr, FORWARD: tl.constexpr):
        """a (M, K) @ b (K, N) in fp32, one (BLOCK_M, BLOCK_N) tile at a time per program (persistent: one
        program per SM); the epilogue stores the tile in two halves to fit shared memory."""
        tiles_n = tl.cdiv(N, BLOCK_N)
        for tile in tl.range(tl.program_id(0), tl.cdiv(M, BLOCK_M) * tiles_n, PROGRAMS, flatten=True):
            m, n = tile // tiles_n * BLOCK_M, tile % tiles_n * BLOCK_N
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for k in range(0, K, BLOCK_K):
                acc = tl.dot(a_desc.load([m, k]), b_desc.load([k, n]), acc)
            left, right = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
            relu2_epilogue(left, out_desc, aux_desc, m, n, FORWARD)
            relu2_epilogue(right, out_desc, aux_desc, m, n + BLOCK_N // 2, FORWARD)


def relu2_tiles(shared_memory, forward):
    """(BLOCK_M, BLOCK_N, BLOCK_K, stages, warps) of the ReLU² matmul for the shared memory per block:
    modded-nanogpt's fused MLP (PR #197, @andrewbriand, @jrauvola) where there are 227 KB (H100, B200); 128x128
    and 3 stages fit the 99 KB of a 4090 or 5090."""
    return (128, 256, 64, 4 if forward else 3, 8) if shared_memory >= 227 * 1024 else (128, 128, 64, 3, 4)


def launch_mm_relu2(a, b, aux=None, shared_memory=None):
    """a (M, K) @ b (K, N), bf16, with ReLU² in the epilogue: aux None -> (pre, relu(pre)²); aux = pre ->
    (a @ b) * 2 relu(pre), the gradient at pre. Tiles for the shared memory per block (default: the GPU's)."""
    a, b = a.contiguous(), b.contiguous()
    (M, K), N = a.shape, b.size(1)
    out = a.new_empty(M, N)
    forward = aux is None
    aux = a.new_empty(M, N) if forward else aux
    gpu = torch.cuda.get_device_properties(a.device) if a.is_cuda else None  # None: Triton's interpreter (tests)
    shared_memory = shared_memory or (gpu.shared_memory_per_block_optin if gpu else 99 * 1024)
    BM, BN, BK, stages, warps = relu2_tiles(shared_memory, forward)
    programs = min(gpu.multi_processor_count if gpu else 4, triton.cdiv(M, BM) * triton.cdiv(N, BN))  # persistent
    descs = (TensorDescriptor.from_tensor(a, [BM, BK]), TensorDescriptor.from_tensor(b, [BK, BN]),
             TensorDescriptor.from_tensor(out, [BM, BN // 2]), TensorDescriptor.from_tensor(aux, [BM, BN // 2]))
    mm_relu2_kernel[(programs,)](*descs, M, N, K, BM, BN, BK, programs, forward, num_stages=stages, num_warps=warps)
    return (out, aux) if forward else out


@torch.library.custom_op("train_gpt::mm_relu2", mutates_args=())
def mm_relu2(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return launch_mm_relu2(a, b)


@torch.library.custom_op("train_gpt::mm_relu2_grad", mutates_args=())
def mm_relu2_grad(grad: torch.Tensor, b: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    return launch_mm_relu2(grad, b, pre)


mm_relu2.register_fake(lambda a, b: (a.new_empty(a.size(0), b.size(1)), a.new_empty(a.size(0), b.size(1))))
mm_relu2_grad.register_fake(lambda grad, b, pre: torch.empty_like(pre))


class ReLU2MLP(torch.autograd.Function):
    """relu(x @ fc)² @ proj.T, bf16; x (M, D), fc and proj (D, 4D). Forward keeps pre = x @ fc and post =
    relu(pre)² from one kernel; backward computes grad @ proj * 2 relu(pre) in one kernel, where unfused ops write
    pre, read it, write post, then write, read and rewrite the gradient at post."""

    @staticmethod
    def forward(ctx, x, fc, proj):
        pre, post = mm_relu2(x, fc)
        ctx.save_for_backward(x, fc, proj, pre, post)
        return post @ proj.T

    @staticmethod
    def backward(ctx, grad):
        x, fc, proj, pre, post = ctx.saved_tensors
        grad_pre = mm_relu2_grad(grad, proj, pre)  # (M, 4D)
        return grad_pre @ fc.T, x.T @ grad_pre, grad.T @ post


# -----------------------------------------------------------------------------
# Model


def norm(x):
    return F.rms_norm(x, (x.size(-1),))  # no learned gain


def init_weight(weight, fan_in, zero_init=False, gain=0.5):
    """Uniform with std gain/sqrt(fan_in) (0.5: modded-nanogpt's CastedLinear), or zeros."""
    bound = gain * (3 / fan_in) ** 0.5
    return nn.init.zeros_(weight) if zero_init else nn.init.uniform_(weight, -bound, bound)


def linear(in_features, out_features, zero_init=False):
    layer = nn.Linear(in_features, out_features, bias=False)
    init_weight(layer.weight, in_features, zero_init)
    return layer


class Rotary(nn.Module):
    """Partial RoPE as record 2025-08-23 has it: head dims i and i + head_dim/2 form a pair; the first
    rope_fraction of the pairs turn at frequencies from 1 down to 1/rope_base (log-spaced, both ends included),
    the other pairs do not turn and carry no position."""

    def __init__(self, head_dim, fraction, base, yarn=False):
        super().__init__()
        self.yarn, self.window = yarn, None  # window: the long window the frequencies were set for
        self.register_buffer("inv_freq", rope_frequencies(head_dim, fraction, base), persistent=False)
        # YaRN (record 2025-12-31): q's gain, the attention scale's growth since the start; cos and sin in bf16
        self.register_buffer("q_gain", torch.ones(()), persistent=False)

    def forward(self, T, device, paired=False):
        """cos, sin (1, T, 1, head_dim/2); paired: (1, T, 1, 2, head_dim/2), the two heads of a pair at positions
        2t and 2t + 1 of the doubled sequence (paired_heads)."""
        angles = torch.outer(torch.arange(2 * T if paired else T, device=device, dtype=torch.float32), self.inv_freq)
        shape = (1, T, 1, 2, -1) if paired else (1, T, 1, -1)
        cos, sin = angles.cos().view(shape), angles.sin().view(shape)
        return (cos.bfloat16(), sin.bfloat16()) if self.yarn else (cos, sin)


def rope_frequencies(head_dim, fraction, base):
    """(head_dim/2,) fp32: round(fraction * head_dim/2) frequencies from 1 down to 1/base, log-spaced, then zeros."""
    turning = round(head_dim // 2 * fraction)
    return torch.cat([(1 / base) ** torch.linspace(0, 1, turning), torch.zeros(head_dim // 2 - turning)])


def apply_rotary(x, cos, sin):
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, T, H, hd/2) each: the two halves of every pair
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1).type_as(x)


GATE_CHANNELS = 12  # attention and smear gates read the first 12 channels (record 2025-08-23, one-4090 script)


def offset_keys(k):
    """k (B, T, H, hd) with dims hd/4..hd/2 and 3hd/4..hd (the pairs RoPE leaves still at rope_fraction 0.5) taken
    from the previous position: a query can then find the token after an earlier copy of its own (record 2025-12-31)."""
    hd = k.size(-1)
    free = (torch.arange(hd, device=k.device) % (hd // 2)) >= hd // 4
    return torch.where(free, torch.cat([k[:, :1], k[:, :-1]], dim=1), k)


class Attention(nn.Module):
    def __init__(self, args, value_embed, layer):
        super().__init__()
        self.args, self.H, self.hd = args, args.num_heads, args.head_dim
        # Q, K and V as one (3, H*hd, D) weight: one matmul forward, and Muon orthogonalises each of the three
        # on its own (record 2025-08-23)
        D, self.pair_muon = args.model_dim, args.pair_muon
        if args.pair_muon:  # record 2026-07-17: Muon orthogonalises Q and K by pairs of heads, (2, H/2, 2 hd, D)
            self.qk = nn.Parameter(init_weight(torch.empty(2, self.H // 2, 2 * self.hd, D), D, gain=args.qkv_init))
            self.v = nn.Parameter(init_weight(torch.empty(self.H * self.hd, D), D, gain=args.qkv_init))
        else:
            self.qkv = nn.Parameter(init_weight(torch.empty(3, self.H * self.hd, D), D, gain=args.qkv_init))
        self.proj = linear(self.H * self.hd, args.model_dim, zero_init=args.zero_init_out and not args.attn_out_init)
        self.paired = layer in args.paired_heads
        self.xsa = nn.Parameter(torch.zeros(self.H)) if layer in args.xsa_layers else None  # tanh(0): off at first
        # v = a*v + b*value_embed in every layer, b unused where no table feeds the layer (record 2025-08-23), or
        # v + 2*sigmoid(gate)*value_embed where one does (record 2025-12-31)
        self.value_lambdas = nn.Parameter(torch.tensor([0.5, 0.5])) if args.value_embeds and not args.ve_gate else None
        self.ve_gate = linear(GATE_CHANNELS, self.H, zero_init=True) if args.ve_gate and value_embed else None
        self.sa_lambdas = nn.Parameter(torch.tensor([0.5, 1.0])) if args.sa_lambdas else None
        self.gate = linear(GATE_CHANNELS, self.H, zero_init=True) if args.attn_gate else None

    def forward(self, x, value_embed, rope, mask, key_offset=False, ve_gate=None, v_extra=None):
        """ve_gate (B, T, H, 1) and v_extra (B, T, D), given by MUDD, replace the value gate and add to v."""
        B, T, _ = x.shape
        qkv = torch.cat([self.qk.flatten(0, 2), self.v]) if self.pair_muon else self.qkv.flatten(0, 1)
        out = self.proj.weight
        if self.sa_lambdas is not None:
            qkv, out = self.sa_lambdas[0] * qkv, self.sa_lambdas[1] * out
        q, k, v = F.linear(x, qkv).view(B, T, 3 * self.H, self.hd).chunk(3, dim=2)  # (B, T, H, hd)
        dtype = v.dtype  # bf16 under autocast on CUDA: norms and fp32 lambdas must not promote the attention
        if self.args.qk_norm:
            q, k = norm(q), norm(k)
        cos, sin, q_gain = rope
        if self.paired:  # the paired rope: heads 2g and 2g + 1 turn as positions 2t and 2t + 1 (record 2026-07-17)
            turn = lambda t: apply_rotary(t.view(B, T, self.H // 2, 2, self.hd), cos, sin).view_as(t)
        else:
            turn = lambda t: apply_rotary(t, cos, sin)
        q, k = turn(q), turn(k)
        if self.args.yarn:  # the scale YaRN has grown to, on q: softmax(scale * g * q.k)
            q = q * q_gain
        if key_offset:
            k = offset_keys(k)
        if ve_gate is not None:
            v = v + ve_gate * value_embed.view_as(v) + v_extra.view_as(v)
        elif self.ve_gate is not None:
            half = GATE_CHANNELS // 2  # record 2026-07-17: 6 channels of x and 6 of the table
            seen = torch.cat([x[..., :half], value_embed[..., :half]], -1) if self.args.ve_gate_mix else x
            v = v + 2 * torch.sigmoid(self.ve_gate(seen[..., :GATE_CHANNELS])).unsqueeze(-1) * value_embed.view_as(v)
        elif self.value_lambdas is not None:
            v = self.value_lambdas[0] * v
            if value_embed is not None:
                v = v + self.value_lambdas[1] * value_embed.view_as(v)
        if self.paired:  # record 2026-07-17, as its views pair them: (B, 2T, H/2, hd), head g at 2t, g + H/2 at 2t + 1
            pair = lambda t: t.reshape(B, 2 * T, self.H // 2, self.hd)
            q, k, v = pair(q), pair(k), pair(v)
        y = attention(q.to(dtype), k.to(dtype), v.to(dtype), mask, self.args.attn_scale).reshape(B, T, self.H, -1)
        if self.xsa is not None:  # XSA (arXiv:2603.09078): remove tanh(alpha) of y's part along v, per head
            v_dir = F.normalize(v, dim=-1, eps=1e-4)
            y = y - torch.tanh(self.xsa).view(-1, 1).to(y.dtype) * (y * v_dir).sum(-1, keepdim=True) * v_dir
        if self.gate is not None:
            y = y * torch.sigmoid(self.gate(x[..., :GATE_CHANNELS])).unsqueeze(-1)
        return F.linear(y.reshape(B, T, self.H * self.hd), out)


E4M3_MAX = 448.0
MLP_ACT_HEADROOM, MLP_PROJ_HEADROOM = 1.80, 1.12  # record 2026-07-17: its delayed scales' room over the last amax


class FP8MLP(torch.autograd.Function):
    """relu(x @ fc)² @ proj.T, x (M, D), fc and proj (D, 4D), the forward in FP8 as record 2026-07-17 computes
    it: x and fc in e4m3 by their amax; the activation by act_scale (1.8 times the previous forward's amax) and
    proj by proj_scale (1.12 times its amax after the step before: update_fp8_scales), delayed scales that need
    no pass over the tensor first. The backward from the pre-activation it computed, in x's precision (the
    rounding passed straight through). -> (output, the activation's amax)"""

    @staticmethod
    def forward(ctx, x, fc, proj, act_scale, proj_scale):
        x_amax, fc_scale = x.abs().amax().clamp(min=1e-12), fc.abs().amax().clamp(min=1e-12) / E4M3_MAX
        x_f8, fc_f8 = (x * (E4M3_MAX / x_amax)).to(torch.float8_e4m3fn), (fc / fc_scale).to(torch.float8_e4m3fn)
        pre = torch._scaled_mm(x_f8, fc_f8.T.contiguous().T, scale_a=(x_amax / E4M3_MAX).float(),
                               scale_b=fc_scale.float(), out_dtype=x.dtype)
        post = F.relu(pre).square()
        post_f8 = (post.float() * (1 / act_scale)).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)
        proj_f8 = (proj.float() / proj_scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(post_f8, proj_f8.T, scale_a=act_scale, scale_b=proj_scale, out_dtype=x.dtype,
                               use_fast_accum=True)
        ctx.save_for_backward(x, fc, proj, pre, post)
        post_amax = post.amax().float().clamp(min=1e-12)
        ctx.mark_non_differentiable(post_amax)
        return out, post_amax

    @staticmethod
    def backward(ctx, grad, _):
        x, fc, proj, pre, post = ctx.saved_tensors
        grad_pre = 2 * (grad @ proj) * F.relu(pre)
        return (grad_pre @ fc.T, x.T @ grad_pre, grad.T @ post, None, None)


@torch.no_grad()
def update_fp8_scales(model, bootstrap):
    """proj's FP8 scale for the coming step (FP8MLP) as record 2026-07-17 sets it after each step: the one
    computed after the step before (bootstrap, its first 16 steps: its amax now, without headroom), and the next
    one from its amax now."""
    for mlp in [block.mlp for block in model.blocks if block.mlp is not None and block.mlp.fp8]:
        amax = mlp.proj.weight.abs().amax().clamp(min=1e-12)
        if bootstrap:
            mlp.proj_scale_next.copy_(amax / E4M3_MAX)
        mlp.proj_scale.copy_(mlp.proj_scale_next)
        mlp.proj_scale_next.copy_(amax.float() * (MLP_PROJ_HEADROOM / E4M3_MAX))


class MLP(nn.Module):
    def __init__(self, args):
        super().__init__()
        D = args.model_dim
        # stored (D, 4D), input dim first, as record 2025-08-23 does: Muon's lr shape factor is then 1, not 2
        self.fc = nn.Parameter(init_weight(torch.empty(D, 4 * D), D))
        self.proj = linear(4 * D, D, zero_init=args.zero_init_out)
        self.act = (lambda x: F.relu(x).square()) if args.mlp_act == "relu2" else F.gelu
        self.fused = args.fused_mlp and args.mlp_act == "relu2" and D % 8 == 0  # TMA: 16-byte aligned rows
        self.fp8 = args.fp8_mlp == "on"  # build_model() decides "auto" for the device
        if args.fp8_mlp != "off":  # the delayed scales (FP8MLP), kept in checkpoints
            self.register_buffer("act_scale", torch.ones(()))
            self.register_buffer("proj_scale", torch.ones(()))  # the one proj is quantised with
            self.register_buffer("proj_scale_next", torch.ones(()))

    def forward(self, x):
        if self.fp8 and self.training:
            y, post_amax = FP8MLP.apply(x.flatten(0, -2), self.fc, self.proj.weight, self.act_scale, self.proj_scale)
            self.act_scale.copy_(post_amax * (MLP_ACT_HEADROOM / E4M3_MAX))  # the next forward's
            return y.view(*x.shape[:-1], -1)
        if self.fused and x.is_cuda:
            bf16 = torch.bfloat16  # as autocast would cast them for F.linear
            y = ReLU2MLP.apply(x.to(bf16).flatten(0, -2), self.fc.to(bf16), self.proj.weight.to(bf16))
            return y.view(*x.shape[:-1], -1)
        return self.proj(self.act(F.linear(x, self.fc.T)))


class Block(nn.Module):
    def __init__(self, args, layer):
        super().__init__()
        self.window = args.window_pattern[layer % len(args.window_pattern)]
        has_value_embed = value_embed_layout(args)[layer] != "."
        mudd = args.mudd and layer == args.num_layers - 1  # its coefficients stand for the value gate and lambdas
        self.attn = None if layer in args.no_attn_layers else Attention(args, has_value_embed and not mudd, layer)
        self.mlp = None if layer in args.no_mlp_layers else MLP(args)
        paired = layer in args.paired_heads
        self.mask = self.window + ("2" if paired else "")  # build_masks' key
        self.x0_skip, self.key_offset = args.x0_skip, args.key_offset and self.window == "L" and not paired
        if args.x0_skip:  # two parameters: record 2025-12-31 smooths a with other Adam betas than b
            self.resid_lambda = nn.Parameter(torch.tensor(args.resid_lambda_init))
            self.x0_lambda = nn.Parameter(torch.tensor(0.0))
        self.sublayer = args.sublayer_lambdas
        if self.sublayer and not mudd:  # record 2026-07-17: resid_lambda_init's square root per sublayer, 1 on its
            self.resid_lambdas = nn.Parameter(torch.full((2,), args.resid_lambda_init ** 0.5))  # output; x0 joins
            self.post_lambdas = nn.Parameter(torch.ones(2))  # after attention
            if self.attn is not None:
                self.x0_lambda = nn.Parameter(torch.tensor(0.0))

    def forward(self, x, x0, value_embed, rope, masks, attn_in=None, bigram=None):
        """attn_in: what attention reads instead of x (attn_input_layer); bigram: added to x's first channels
        after attention (bigram_dim)."""
        if self.sublayer:  # x = a x + b sublayer(norm(x)); lambdas in bf16, as record 2026-07-17 casts them
            (resid_attn, resid_mlp), (post_attn, post_mlp) = self.resid_lambdas.bfloat16(), self.post_lambdas.bfloat16()
            if self.attn is not None:
                y = self.attn(norm(x if attn_in is None else attn_in), value_embed, rope[self.mask],
                              masks[self.mask], self.key_offset)
                x = resid_attn * x + post_attn * y + self.x0_lambda.bfloat16() * x0
                x = x if bigram is None else add_channels(x, bigram)
            if self.mlp is not None:
                x = resid_mlp * x + post_mlp * self.mlp(norm(x))
            return x
        if self.x0_skip:
            x = self.resid_lambda * x + self.x0_lambda * x0
        if self.attn is not None:
            x = x + self.attn(norm(x), value_embed, rope[self.mask], masks[self.mask], self.key_offset)
        if self.mlp is not None:
            x = x + self.mlp(norm(x))
        return x


def add_channels(x, y):
    """x with y (..., n) added to its first n channels."""
    return torch.cat([x[..., :y.size(-1)] + y, x[..., y.size(-1):]], dim=-1)


VAL_CHUNK = 16384  # validation tokens whose logits exist at once (bf16 + fp32: 4.6 GiB at vocab 50304)


def value_embed_layout(args):
    """The value-embedding table each layer reads (a digit) or none ("."), a character per layer: by default
    table i feeds layer i and layer L - n + i (U-Net pattern, record 2025-08-23)."""
    tables = "".join(map(str, range(args.value_embeds)))
    return args.value_embed_layout or tables + "." * (args.num_layers - 2 * len(tables)) + tables


def previous_tokens(idx):
    """(B, T) previous token, and whether there is none: the first position or a document start (EOT)."""
    prev = F.pad(idx[:, :-1], (1, 0))
    no_prev = (idx == EOT)
    no_prev[:, 0] = True
    return prev, no_prev


MUDD_COEFS, MUDD_SCALE = 14, 0.1  # the last layer's MUDD coefficients (the output's: 5), their scale


def mudd_bias(resid_lambda_init):
    """MUDD's biases at the start (divided by MUDD_SCALE), so that the last layer starts as the others do (record
    2026-07-17): value gates 2 (2 sigmoid's top), resid lambdas sqrt(resid_lambda_init), output lambdas 1, x0 0,
    bigram 0.05; the output's weight on layer attn_input_layer's state -0.5 (the backout that it absorbed)."""
    bias = torch.zeros(2, MUDD_COEFS)
    r = resid_lambda_init ** 0.5
    bias[0, 6:] = torch.tensor([2.0, 2.0, r, 1.0, 0.0, 0.05, r, 1.0])
    bias[1, 1] = -0.5
    return bias / MUDD_SCALE


class GPT(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.args = args
        L, D, V = args.num_layers, args.model_dim, args.vocab_size
        self.embed = nn.Embedding(V, D)
        self.value_embeds = nn.ModuleList(nn.Embedding(V, args.num_heads * args.head_dim)
                                          for _ in range(args.value_embeds))
        for table in self.value_embeds if args.ve_gate else ():  # record 2025-12-31
            nn.init.zeros_(table.weight)
        self.blocks = nn.ModuleList(Block(args, i) for i in range(L))
        self.rotary = Rotary(args.head_dim, args.rope_fraction, args.rope_base, args.yarn)
        self.lm_head = linear(D, V, zero_init=True)  # zero-init head (modded-nanogpt)
        self.embed_tied = args.tied_embed_until > 0  # the embedding is lm_head's weight: set by apply_schedules
        if self.embed_tied:  # it must not start at zero then (record 2025-12-31: std 0.005)
            nn.init.normal_(self.lm_head.weight, std=0.005)
        self.skip_weights = nn.Parameter(torch.ones(L // 2)) if args.unet_skips else None
        if args.gated_skip:  # record 2025-12-31: sigmoid(-1.5) * 2 * sigmoid(0) = 0.18 of the skip at the start
            self.skip_gate = linear(GATE_CHANNELS, 1, zero_init=True)
            self.skip_lambda = nn.Parameter(torch.tensor(-1.5))
        if args.smear_gate:
            self.smear_gate = linear(GATE_CHANNELS, 1, zero_init=True)
            self.smear_lambda = nn.Parameter(torch.zeros(()))
        for table in self.value_embeds if args.value_embed_std else ():  # record 2026-07-17
            nn.init.normal_(table.weight, std=args.value_embed_std)
        if args.bigram_embed:  # record 2026-01-19: zero-initialised table, per-layer weight 0.1 (2026-07-17: 0.05)
            self.bigram = nn.Embedding(V * args.bigram_embed, args.bigram_dim or D)
            nn.init.zeros_(self.bigram.weight)
            self.bigram_lambdas = nn.Parameter(torch.full((L,), 0.05 if args.bigram_dim else 0.1))
            if args.bigram_signs:  # record 2026-07-17: random signs, the same on every rank (one seed)
                self.register_buffer("sign_table", torch.randn(args.bigram_signs, args.bigram_dim or D).sign())
        if args.mudd:  # record 2026-07-17 (arXiv:2502.12170): 2 small MLPs of 64 hidden units, outputs scaled by 0.1
            self.mudd_w1 = nn.Parameter(torch.empty(2, 64, D))
            for w in self.mudd_w1.data:
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            self.mudd_w2 = nn.Parameter(torch.zeros(2, MUDD_COEFS, 64))
            self.mudd_b2 = nn.Parameter(mudd_bias(args.resid_lambda_init))
        self.backout_lambda = nn.Parameter(torch.tensor(0.5)) if args.backout else None  # one-4090 script: 0.5
        if args.multi_token:  # the weights of the next 3 tokens, set each step by apply_schedules
            self.register_buffer("mtp_weights", torch.tensor(mtp_weights_at(0, args)), persistent=False)
        self.use_fp8 = False  # build_model() decides it for the device

    def embed_tokens(self, idx):
        """Token embedding with the smear gate: a gated fraction of the previous position's embedding, across
        documents as record 2025-12-31 smears."""
        x = F.embedding(idx, self.lm_head.weight) if self.embed_tied else self.embed(idx)  # (B, T, D)
        if self.args.smear_gate:
            gate = self.smear_lambda * torch.sigmoid(self.smear_gate(x[:, 1:, :GATE_CHANNELS]))  # (B, T - 1, 1)
            x = torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], dim=1)
        return norm(x) if self.args.norm_after_embed else x

    def bigram_embedding(self, idx):
        """Hashed (previous, current) token pair -> row; the last row stands for 'no previous token': at a
        document start, or with bigram_dim only at the sequence's first position, as record 2026-07-17's loader
        hashes (which also hashes the second position with that row's number for the token before it). With
        bigram_signs the row is multiplied by a row of random signs picked by prev ^ token."""
        prev, no_prev = previous_tokens(idx)
        rows = self.bigram.num_embeddings
        hashed_prev = prev
        if self.args.bigram_dim:
            no_prev = torch.zeros_like(no_prev)
            no_prev[:, 0] = True
            hashed_prev = torch.cat([prev[:, :1], torch.full_like(prev[:, :1], rows - 1), prev[:, 2:]], dim=1)
        hashed = torch.bitwise_xor(36313 * idx, 27191 * hashed_prev) % (rows - 1)  # the hash of record 2026-01-19
        bigram = self.bigram(hashed.masked_fill(no_prev, rows - 1))
        if self.args.bigram_signs:  # record 2026-07-17: rows shared by many pairs differ in sign between them
            signs = (torch.bitwise_xor(prev, idx) % self.sign_table.size(0)).masked_fill(no_prev, 0)
            bigram = bigram * self.sign_table[signs]
        return bigram

    def mudd_coefs(self, x, which, n):
        """n per-token coefficients (B, T, 1) from x by MUDD's MLP `which` (0: the last layer's, 1: the output's)."""
        h = F.gelu(F.linear(x, self.mudd_w1[which]))
        return ((F.linear(h, self.mudd_w2[which, :n]) + self.mudd_b2[which, :n]) * MUDD_SCALE).split(1, dim=-1)

    def forward(self, idx, targets=None, windows=None):
        """idx (B, T) int64 -> loss if targets are given, else logits (B, T, V) in fp32. The training loss is
        summed over each sequence and averaged over the B sequences: record 2025-08-23 sums over the one
        sequence each of its 8 GPUs holds and averages the gradients over the GPUs, so this is its gradient on
        any number of GPUs. In eval mode the loss is the mean per token."""
        with torch.autocast(idx.device.type, torch.bfloat16, enabled=idx.is_cuda):
            x = self.trunk(idx, windows)
            return self.head(x, targets)

    def trunk(self, idx, windows):
        args, L, T = self.args, self.args.num_layers, idx.size(1)
        masks = build_masks(idx, windows, tokens=args.window_tokens, paired=bool(args.paired_heads))
        rope = dict.fromkeys("LS", (*self.rotary(T, idx.device), self.rotary.q_gain))  # by build_masks' keys
        if args.paired_heads:
            rope.update(dict.fromkeys(("L2", "S2"), (*self.rotary(T, idx.device, paired=True), self.rotary.q_gain)))
        x = x0 = self.embed_tokens(idx)
        bigram = self.bigram_embedding(idx) if args.bigram_embed else None
        if args.bigram_dim:  # record 2026-07-17: into x's and x0's first channels, then after each attention
            bigram_lambdas = self.bigram_lambdas.bfloat16()
            x = x0 = add_channels(x, bigram_lambdas[0] * bigram)
        # each table looked up once for its layers (record 2025-08-23): backward then scatters the layers'
        # gradients into the table once, not once per layer
        value_embeds = [table(idx) for table in self.value_embeds]
        skips, backout, saved = [], None, {}  # saved: the outputs of attn_input_layer and gated_skip's first layer
        for i, (block, table) in enumerate(zip(self.blocks, value_embed_layout(args))):
            if args.unet_skips and i >= L - L // 2:  # decoder half: add the mirrored encoder layer's output
                x = x + self.skip_weights[i - (L - L // 2)] * skips.pop()
            if args.gated_skip and i == args.gated_skip[1]:
                gate = torch.sigmoid(self.skip_lambda) * 2 * torch.sigmoid(self.skip_gate(x0[..., :GATE_CHANNELS]))
                x = x + gate * skips.pop()
            value_embed = None if table == "." else value_embeds[int(table)]
            attn_in = saved.get(args.attn_input_layer)
            if args.mudd and i == L - 1:
                last_in = x
                x = self.mudd_layer(block, x, x0, value_embed, rope, masks, bigram, attn_in)
            elif args.bigram_dim:  # layer 0's went in with the embedding
                x = block(x, x0, value_embed, rope, masks, attn_in, bigram_lambdas[i] * bigram if i else None)
            else:
                if bigram is not None:
                    x = x + self.bigram_lambdas[i] * bigram
                x = block(x, x0, value_embed, rope, masks, attn_in)
            if (args.unet_skips and i < L // 2) or (args.gated_skip and i == args.gated_skip[0]):
                skips.append(x)
            if i == args.attn_input_layer or (args.gated_skip and i == args.gated_skip[0]):
                saved[i] = x
            if i + 1 == -(-2 * L // 3):  # the output of layer 7 of 12 (record 2025-10-04) or of 11 (2025-12-31)
                backout = x
        if self.backout_lambda is not None:
            x = x - self.backout_lambda * backout
        if args.mudd:  # the output adds x0, two saved outputs, the last layer's input and the first value table
            mu = self.mudd_coefs(x, 1, 5)
            x = (x + mu[0] * x0 + mu[1] * saved[args.attn_input_layer] + mu[2] * last_in + mu[3] * value_embeds[0]
                 + mu[4] * saved[args.gated_skip[0]])
        return norm(x)

    def mudd_layer(self, block, x, x0, value_embed, rope, masks, bigram, attn_in):
        """The last layer with MUDD (record 2026-07-17): 14 per-token coefficients from its input x mix x0, layer
        attn_input_layer's output (attn_in) and x into its values and its residual, and stand for its value
        gate, lambdas and bigram weight."""
        mu = self.mudd_coefs(x, 0, MUDD_COEFS)
        v_extra = mu[0] * x0 + mu[1] * attn_in + mu[2] * x
        x = (1 + mu[5]) * x + mu[3] * x0 + mu[4] * attn_in
        gate = torch.cat([mu[6], mu[7]], dim=-1).repeat_interleave(self.args.num_heads // 2, dim=-1).unsqueeze(-1)
        y = block.attn(norm(attn_in), value_embed, rope[block.mask], masks[block.mask], block.key_offset, gate, v_extra)
        x = add_channels(mu[8] * x + mu[9] * y + mu[10] * x0, mu[11] * bigram)
        return mu[12] * x + mu[13] * block.mlp(norm(x))

    def head(self, x, targets):
        args = self.args
        B, T, D = x.shape
        x = x.reshape(-1, D)
        mtp = self.mtp_weights if args.multi_token else None
        if self.use_fp8 and self.training and targets is not None:  # validation in bf16, as the record evaluates
            return FP8HeadLoss.apply(x, self.lm_head.weight, targets.reshape(-1), B, args.logit_softcap,
                                     args.softcap_form, mtp, args.fp8_head_scales, args.mtp_tail_grad)
        # (rows, V) in fp32; under torch.compile the cast fuses into the loss kernel
        logits = lambda rows: softcap(self.lm_head(rows).float(), args.logit_softcap, args.softcap_form)
        if targets is None:
            return logits(x).view(B, T, -1)
        if self.training and mtp is not None:
            return multi_token_loss(logits(x), targets, mtp, args.mtp_tail_grad) / B
        if self.training:
            return F.cross_entropy(logits(x), targets.reshape(-1), reduction="sum") / B
        # validation: the mean per token, VAL_CHUNK tokens at a time, so that a 256K-token val sequence never holds
        # all its logits at once (eager, that would be a bf16 and an fp32 copy of 262144 x 50304: 79 GB)
        chunks = zip(x.split(VAL_CHUNK), targets.reshape(-1).split(VAL_CHUNK))
        return sum(F.cross_entropy(logits(rows), t, reduction="sum") for rows, t in chunks) / targets.numel()


def build_model(args, device):
    """GPT on its device. On CUDA the embedding tables are bf16, as record 2025-08-23 keeps them (the residual
    stream is then bf16 too); the FP8 head is decided for the device."""
    model = GPT(args).to(device)
    if device.type == "cuda":
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                module.bfloat16()
        if args.tied_embed_until:  # lm_head's weight is the embedding: bf16 too, as record 2025-12-31 has it
            model.lm_head.bfloat16()
    set_fp8(model, args, device)
    return model


def set_fp8(model, args, device):
    """Where the FP8 paths run, for the device: the head (fp8_head), the MLPs (fp8_mlp)."""
    model.use_fp8 = fp8_on(args.fp8_head, device)
    for block in model.blocks:
        if block.mlp is not None:
            block.mlp.fp8 = fp8_on(args.fp8_mlp, device)


def param_groups(model):
    """The one place that decides which optimizer trains each parameter.
    -> {"muon": hidden matrices, "embed": token/value tables, "bigram": its table, "head": lm_head,
        "scalar": the rest}; gates go to Muon as records 2025-08-23 and 09-18 have them, or with adam_recipe
        2025-12-31 to Adam, as scalars"""
    groups = {"muon": [], "embed": [], "bigram": [], "head": [], "scalar": []}
    gates_in_adam = model.args.adam_recipe != "2025-08-23"
    for name, p in model.named_parameters():
        if name.startswith(("embed.", "value_embeds.")):
            groups["embed"].append(p)
        elif name.startswith("bigram."):
            groups["bigram"].append(p)
        elif name.startswith("lm_head."):
            groups["head"].append(p)
        elif name.startswith(("blocks.", "smear_gate.")) and p.ndim >= 2 and not (gates_in_adam and "gate" in name):
            groups["muon"].append(p)
        else:  # lambdas, skip weights
            groups["scalar"].append(p)
    return groups


def check_param_coverage(model, optimizers):
    """Every parameter must sit in exactly one optimizer group; fail with its name if not."""
    placed = [id(p) for opt in optimizers for group in opt.param_groups for p in group["params"]]
    for name, p in model.named_parameters():
        if placed.count(id(p)) != 1:
            raise ConfigError(f"parameter {name} is in {placed.count(id(p))} optimizer groups (must be exactly 1);"
                              " fix param_groups() (or ADAM_RECIPES)")


def check_gradients(model):
    """After the first backward: a parameter without a gradient never trains (an unused table or gate)."""
    missing = [name for name, p in model.named_parameters()
               if p.grad is None and not (model.embed_tied and name == "embed.weight")]
    if missing:
        raise ConfigError(f"parameters received no gradient: {', '.join(missing)}; nothing in forward() uses them"
                          " with these flags")


# -----------------------------------------------------------------------------
# Optimizers: Muon for hidden matrices, Adam for the rest

NS5_COEFFS = [(3.4445, -4.7750, 2.0315)] * 5  # Newton-Schulz quintic (Keller Jordan's Muon)
POLAR_EXPRESS_COEFFS = [  # Polar Express (Amsel et al. 2025), as record 2025-09-29 has them
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def orthogonalize(G, method="ns5"):
    """Approximate U V^T of G = U S V^T by an odd matrix polynomial; G is a matrix or a stack of same-shape
    matrices (one batched matmul per term instead of one per matrix). bf16 on GPU, fp32 on CPU."""
    X = G.bfloat16() if G.is_cuda else G.float()
    transposed = X.size(-2) > X.size(-1)
    if transposed:
        X = X.mT
    coeffs, safety, eps = (POLAR_EXPRESS_COEFFS, 1.02, 1e-6) if method == "polar" else (NS5_COEFFS, 1.0, 1e-7)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * safety + eps)  # spectral norm at most 1 (records 08-23, 09-29)
    for a, b, c in coeffs:
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return (X.mT if transposed else X).to(G.dtype)


def equilibrate_rows(G):
    """Scale every row to its matrix's RMS row norm: equal row norms, same Frobenius norm (G: matrix or stack)."""
    row_norms = G.norm(dim=-1, keepdim=True)
    return G * (row_norms.square().mean(dim=-2, keepdim=True).sqrt() / row_norms.clamp_min(1e-12))


class Muon(torch.optim.Optimizer):
    """Muon (Keller Jordan, 2024): Nesterov momentum whose update is orthogonalised, lr scaled by shape.

    Parameters are grouped by shape, and each group is orthogonalised as one stack (the ~46 matrices of the
    124M model cost four batched iterations, not 46). Distributed as record 2025-12-31's NorMuon: rank r owns
    matrices [r * share, (r + 1) * share) of each group (the stack padded with zeros to share * world_size). When
    backward has accumulated a group's last gradient of the step (hooks, armed for the last micro-batch), its
    gradients are reduce-scattered, so rank r receives the mean of its own; it keeps their momentum (and NorMuon's
    second moments), updates them, and the group's weights are all-gathered. state_dict() gathers the whole
    state, and load_state_dict() keeps a rank's own part: a checkpoint resumes on any number of processes."""

    def __init__(self, params, args, rank=0, world_size=1, lr_muls=None):
        self.lr_muls = lr_muls or {}  # parameter -> its lr multiplier, if not the shape's max(1, rows/cols)**0.5
        params = sorted(params, key=lambda p: tuple(p.shape), reverse=True)
        shapes = list(dict.fromkeys(tuple(p.shape) for p in params))
        groups = [dict(params=[p for p in params if tuple(p.shape) == s]) for s in shapes]
        super().__init__(groups, dict(lr=args.muon_lr, initial_lr=args.muon_lr, momentum=args.muon_momentum,
                                      weight_decay=args.muon_weight_decay))
        self.args, self.rank, self.world_size = args, rank, world_size
        self.armed, self.ready, self.reductions = False, {}, {}  # hooks: group index -> gradients in, its reduction
        self.stepped = False
        if world_size > 1:
            for index, group in enumerate(self.param_groups):
                for p in group["params"]:
                    p.register_post_accumulate_grad_hook(functools.partial(self.gradient_ready, index))

    def share(self, group):
        """-> (matrices per rank, this rank's first)"""
        share = -(-len(group["params"]) // self.world_size)
        return share, self.rank * share

    def stacked(self, tensors, rows):
        """tensors (one per matrix, at least one) as a stack of `rows`, the rows past them zero."""
        stack = torch.zeros(rows, *tensors[0].shape, dtype=tensors[0].dtype, device=tensors[0].device)
        torch.stack(tensors, out=stack[:len(tensors)])
        return stack

    def state_like(self, p):
        """What a matrix's state holds after a step, as zeros: its momentum, and NorMuon's second moment."""
        like = dict(momentum_buffer=torch.zeros_like(p))
        if self.args.normuon:
            shape = list(p.shape)
            shape[-2 if p.size(-2) < p.size(-1) else -1] = 1  # apply_update's `across`
            like["second_moment"] = p.new_zeros(shape, dtype=torch.float32)
        return like

    def arm(self):
        """The next backward is the step's last: its hooks start each group's reduce-scatter."""
        self.armed = self.world_size > 1

    @torch.no_grad()
    def gradient_ready(self, index, p):
        if not self.armed:
            return
        group = self.param_groups[index]
        self.ready[index] = self.ready.get(index, 0) + 1
        if self.ready[index] < len(group["params"]):
            return
        share, _ = self.share(group)
        mine = torch.empty(share, *p.shape, dtype=p.grad.dtype, device=p.grad.device)
        grads = self.stacked([q.grad for q in group["params"]], share * self.world_size)
        self.reductions[index] = (mine, dist.reduce_scatter_tensor(mine, grads, async_op=True))  # SUM (gloo: no AVG)

    @torch.no_grad()
    def step(self):
        W, gathers = self.world_size, []
        self.armed, self.ready = False, {}
        for index, group in enumerate(self.param_groups):  # in backward's order the reductions finish
            params, momentum = group["params"], group["momentum"]
            share, first = self.share(group)
            owned = params[first:first + share]
            if W > 1:
                grads, handle = self.reductions.pop(index)
                handle.wait()
                grads.div_(W)
            else:
                grads = torch.stack([p.grad for p in params])
            updates = torch.zeros_like(grads)  # rows past the group's end stay zero
            for j, p in enumerate(owned):
                if "momentum_buffer" not in self.state[p]:
                    self.state[p].update(self.state_like(p))
                self.state[p]["momentum_buffer"].lerp_(grads[j], 1 - momentum)
                torch.lerp(grads[j], self.state[p]["momentum_buffer"], momentum, out=updates[j])  # Nesterov
            if self.args.muon_row_equilibration:
                updates = equilibrate_rows(updates)
            updates = orthogonalize(updates, self.args.muon_ortho)
            for j, p in enumerate(owned):
                self.apply_update(p, updates[j], group)
            if W > 1:
                gathers.append((params, self.gather([p.detach() for p in owned], params[0], share)))
        for params, (gathered, wait) in gathers:
            wait()
            for p, weight in zip(params, gathered):
                p.copy_(weight)
        self.stepped = True

    def gather(self, owned, like, share):
        """All-gather the ranks' `share` tensors shaped like `like` (this rank's: owned, zeros past them); ->
        (the stack of all, wait())"""
        mine = self.stacked(owned or [torch.zeros_like(like)], share)
        gathered = torch.empty(share * self.world_size, *like.shape, dtype=like.dtype, device=like.device)
        return gathered, dist.all_gather_into_tensor(gathered, mine, async_op=True).wait

    def state_dict(self):
        """The whole state: every rank's part gathered (a collective at more than one process)."""
        if self.world_size == 1 or not self.stepped:
            return super().state_dict()
        whole = collections.defaultdict(dict)
        for group in self.param_groups:
            params = group["params"]
            share, first = self.share(group)
            for key, like in self.state_like(params[0]).items():
                gathered, wait = self.gather([self.state[p][key] for p in params[first:first + share]], like, share)
                wait()
                for p, value in zip(params, gathered):
                    whole[p][key] = value
        saved, self.state = self.state, whole
        try:
            return super().state_dict()
        finally:
            self.state = saved

    def load_state_dict(self, state_dict):
        """A whole state, of which a rank keeps its own matrices' part."""
        super().load_state_dict(state_dict)
        self.stepped = bool(state_dict["state"])
        for group in self.param_groups:
            share, first = self.share(group)
            for p in group["params"][:first] + group["params"][first + share:]:
                self.state.pop(p, None)

    def apply_update(self, p, update, group):
        """p: a matrix, or a stack of matrices (Q, K, V) updated each on its own."""
        args, state, (rows, cols) = self.args, self.state[p], p.shape[-2:]
        if args.normuon:  # NorMuon (Li et al. 2025) as record 2025-12-31 computes it: each row or column of the
            # update, whichever there are more of (rows of a square matrix), divided by its RMS's running average;
            # the update's norm kept
            across = -2 if rows < cols else -1
            mean_square = update.float().square().mean(dim=across, keepdim=True)
            norm = lambda scale: (mean_square * update.size(across) * scale).sum(dim=(-2, -1), keepdim=True).sqrt()
            state["second_moment"].lerp_(mean_square, 1 - args.normuon_beta2)
            step_size = state["second_moment"].clamp_min(1e-10).rsqrt()
            update = update * (step_size * (norm(1) / norm(step_size.square()).clamp_min(1e-10))).to(update.dtype)
        if args.muon_plus:  # Muon+: Frobenius norm sqrt(min(m, n)), as an exactly orthogonal matrix has
            update = update * (min(rows, cols) ** 0.5 / update.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-12))
        lr = group["lr"] * self.lr_muls.get(p, max(1, rows / cols) ** 0.5)
        if group["weight_decay"]:  # lr twice, as records 2025-12-31 and 2026-01-19 scale it: the decay follows
            decay = group["weight_decay"] * group["lr"] * lr  # the lr schedule squared
            p.sub_(p * decay * ((update * p) >= 0) if args.cautious_wd else p * decay)
        p.add_(update.to(p.dtype), alpha=-lr)


class Adam(torch.optim.Optimizer):
    """Adam as records 2025-08-23 and 2025-12-31 write it (eps added to sqrt(v), then the bias corrections), with
    cautious weight decay: weight_decay * lr**2 of a weight, where its update has the weight's sign (records
    2025-12-31, 2026-01-19). One multi-tensor kernel per operation and group; moments in the parameter's dtype, as
    record 2025-08-23's, or in fp32 (adam_fp32_state); a step count per parameter (the embedding joins late).

    Distributed as record 2025-12-31's DistAdam: a large matrix whose rows split evenly over the ranks has its
    gradient reduce-scattered by rows as soon as backward is done with it (hooks, armed for the last micro-batch);
    rank r keeps the state of its rows, updates them, and the matrix is all-gathered. Smaller ones are all-reduced
    and updated whole on every rank. state_dict() gathers the whole state; load_state_dict() keeps a rank's rows."""

    def __init__(self, groups, args, rank=0, world_size=1):
        super().__init__(groups, dict(betas=tuple(args.adam_betas), eps=args.adam_eps, weight_decay=0.0))
        self.moment_dtype = torch.float32 if args.adam_fp32_state else None
        self.rank, self.world_size, self.armed, self.reductions = rank, world_size, False, []
        if world_size > 1:
            for group in self.param_groups:
                for p in group["params"]:
                    p.register_post_accumulate_grad_hook(self.gradient_ready)

    def rows(self, p):
        """This rank's rows of p if p is sharded (as the record's DistAdam shards: at least 1024 elements), else
        None: all of it."""
        W = self.world_size
        if W == 1 or p.numel() < 1024 or p.size(0) % W:
            return None
        share = p.size(0) // W
        return slice(self.rank * share, (self.rank + 1) * share)

    def arm(self):
        """The next backward is the step's last: each gradient's reduction starts as soon as it is done."""
        self.armed = self.world_size > 1

    @torch.no_grad()
    def gradient_ready(self, p):
        if not self.armed:
            return
        rows, grad = self.rows(p), p.grad  # summed (gloo has no AVG), averaged in take_gradients
        if rows is None:
            self.reductions.append((p, grad, dist.all_reduce(grad, async_op=True)))
        else:
            mine = torch.empty_like(grad[rows])
            self.reductions.append((p, mine, dist.reduce_scatter_tensor(mine, grad, async_op=True)))

    def take_gradients(self):
        """{parameter: its gradient averaged over the ranks, this rank's rows of it if sharded}; none for the
        embedding while it is tied."""
        if self.world_size == 1:
            return {p: p.grad for group in self.param_groups for p in group["params"] if p.grad is not None}
        grads = {}
        for p, grad, handle in self.reductions:
            handle.wait()
            grads[p] = grad.div_(self.world_size)
        self.armed, self.reductions = False, []
        return grads

    @torch.no_grad()
    def hold(self):
        """Keep this step's gradients (averaged over the ranks) for the next step(), which adds them first: the
        same sum in the same order for any number of processes (record 2025-12-31 sums before averaging)."""
        for p, grad in self.take_gradients().items():
            state = self.state[p]
            state["pending"] = state["pending"] + grad if "pending" in state else grad

    @torch.no_grad()
    def step(self):
        grads, gathers = self.take_gradients(), []
        for group in self.param_groups:
            params = [p for p in group["params"] if p in grads]  # the embedding waits while it is tied
            mine = [p if self.rows(p) is None else p[self.rows(p)] for p in params]
            for p, part in zip(params, mine):
                state = self.state[p]
                if "exp_avg" not in state:
                    zeros = lambda: torch.zeros_like(part, dtype=self.moment_dtype)
                    state.update(step=0, exp_avg=zeros(), exp_avg_sq=zeros())
                state["step"] += 1
            g = [self.state[p].pop("pending") + grads[p] if "pending" in self.state[p] else grads[p] for p in params]
            m, v = [self.state[p]["exp_avg"] for p in params], [self.state[p]["exp_avg_sq"] for p in params]
            beta1, beta2 = group["betas"]
            torch._foreach_mul_(m, beta1)
            torch._foreach_add_(m, g, alpha=1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, g, g, value=1 - beta2)
            denominators = torch._foreach_add(torch._foreach_sqrt(v), group["eps"])
            updates = torch._foreach_div(m, denominators)
            torch._foreach_mul_(updates, [group["lr"] * (1 - beta2 ** t) ** 0.5 / (1 - beta1 ** t)
                                          for t in (self.state[p]["step"] for p in params)])
            if group["weight_decay"]:
                agree = [(u * w > 0).to(w.dtype) for u, w in zip(updates, mine)]
                torch._foreach_addcmul_(updates, mine, agree, value=group["weight_decay"] * group["lr"] ** 2)
            torch._foreach_sub_(mine, updates)
            gathers += [dist.all_gather_into_tensor(p, part.clone(), async_op=True)
                        for p, part in zip(params, mine) if part is not p]
        for handle in gathers:
            handle.wait()

    def state_dict(self):
        """The whole state: sharded rows gathered (a collective at more than one process)."""
        whole = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p not in self.state:
                    continue
                whole[p] = dict(self.state[p])
                for key, value in whole[p].items():
                    if torch.is_tensor(value) and self.rows(p) is not None:
                        whole[p][key] = value.new_empty(value.size(0) * self.world_size, *value.shape[1:])
                        dist.all_gather_into_tensor(whole[p][key], value)
        saved, self.state = self.state, collections.defaultdict(dict, whole)
        try:
            return super().state_dict()
        finally:
            self.state = saved

    def load_state_dict(self, state_dict):
        """As torch's, but the moments keep the dtype they were saved in (torch's casts them to the parameter's); a
        sharded parameter's state keeps this rank's rows."""
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for i, saved in state_dict["state"].items():
            rows = self.rows(params[i])
            self.state[params[i]].update({k: (v if rows is None else v[rows]).to(params[i].device, copy=True)
                                          for k, v in saved.items() if torch.is_tensor(v)})


# Record 2025-12-31's Adam groups (adam_recipe): its lr 0.008 and weight decay 0.005 times each parameter's lr_mul
# and wd_mul there (the decay cautious and times lr**2), betas (0.65, 0.95), or (0.9, 0.99) for the lambdas it
# smooths in a second Adam. (name pattern, lr, betas, weight decay): a parameter takes the first row it matches.
ADAM_RECIPES = {"2025-12-31": [
    (r"^(lm_head|embed)\.", 0.008, (0.65, 0.95), 0.75),
    (r"^value_embeds\.", 0.6, (0.65, 0.95), 0.025),
    (r"\.(gate|ve_gate)\.", 0.008, (0.65, 0.95), 0.005),
    (r"^smear_gate\.", 0.008 * 0.01, (0.65, 0.95), 0.0),
    (r"^skip_gate\.", 0.008 * 0.05, (0.65, 0.95), 0.0),
    (r"\.x0_lambda$", 0.04, (0.65, 0.95), 0.0),
    (r"_lambda", 0.04, (0.9, 0.99), 0.0),  # the residual, attention (sa), smear, backout and skip lambdas
], "2026-07-17": [  # its lr 0.008 times lr_mul; decay 0.005 times wd_mul
    (r"^(lm_head|embed)\.", 0.008, (0.5, 0.95), 0.75),
    (r"^(value_embeds|bigram)\.", 0.6, (0.75, 0.95), 0.025),
    (r"\.(gate|ve_gate)\.", 0.008, (0.9, 0.99), 0.005),
    (r"^smear_gate\.", 0.008 * 0.01, (0.9, 0.99), 0.0),
    (r"^skip_gate\.", 0.008 * 0.05, (0.9, 0.99), 0.0),
    (r"^mudd_b2$", 0.002, (0.9, 0.99), 0.0),
    (r"^mudd_", 0.002, (0.9, 0.99), 0.005),
    (r"\.resid_lambdas$", 0.04, (0.9, 0.95), 0.0),
    (r"\.(post_lambdas|x0_lambda|xsa)$|^bigram_lambdas$", 0.008, (0.9, 0.95), 0.0),
    (r"_lambda", 0.04, (0.9, 0.99), 0.0),  # its "scalars": attention (sa), smear and skip lambdas
]}
MUON_KINDS = {"attn.qkv": 0, "attn.qk": 0, "attn.v": 0, "attn.proj.weight": 0, "mlp.fc": 1,
              "mlp.proj.weight": 2}  # for muon_lr_muls


def build_optimizers(model, args, rank=0, world_size=1):
    groups = param_groups(model)
    hidden = set(groups["muon"])
    kinds = {p: MUON_KINDS.get(name.split(".", 2)[-1]) for name, p in model.named_parameters() if p in hidden}
    muon = Muon(groups["muon"], args, rank, world_size,
                {p: args.muon_lr_muls[kind] for p, kind in kinds.items() if kind is not None and args.muon_lr_muls})
    adam_groups = [dict(params=groups["embed"], lr=args.embed_lr),
                   dict(params=groups["bigram"], lr=args.embed_lr, betas=tuple(args.bigram_betas),
                        weight_decay=args.bigram_weight_decay),
                   dict(params=groups["head"], lr=args.head_lr), dict(params=groups["scalar"], lr=args.scalar_lr)]
    if args.adam_recipe in ADAM_RECIPES:
        table = ADAM_RECIPES[args.adam_recipe]
        adam_groups = [dict(params=[], lr=lr, betas=betas, weight_decay=decay) for _, lr, betas, decay in table]
        for name, p in model.named_parameters():
            row = next((i for i, (pattern, *_) in enumerate(table) if re.search(pattern, name)), None)
            if p not in hidden and row is not None:
                adam_groups[row]["params"].append(p)
    adam = Adam([dict(group, initial_lr=group["lr"]) for group in adam_groups if group["params"]], args, rank,
                world_size)
    check_param_coverage(model, [muon, adam])
    return muon, adam


# -----------------------------------------------------------------------------
# Schedules: pure functions of the step


def scheduled_steps(args):
    """The steps the schedules stretch over; the extension steps after them hold their last values."""
    return args.num_iterations - args.extension_steps


def lr_multiplier(step, args):
    """lr_peaks in equal stages of the scheduled steps (a stage from just after its start, as record 2025-12-31
    ties it to the batch size, or with lr_stage_from_start from its first step, round(k N / stages), as record
    2026-07-17), the last cooldown_frac of them linear down to final_lr_frac; then final_lr_frac."""
    N, peaks = scheduled_steps(args), args.lr_peaks
    if step > N:
        return args.final_lr_frac
    x = step / N
    passed = (step >= round(k * N / len(peaks)) if args.lr_stage_from_start else x > k / len(peaks)
              for k in range(1, len(peaks)))
    peak = peaks[sum(passed)]
    if x < 1 - args.cooldown_frac:
        return peak
    w = (1 - x) / args.cooldown_frac
    return peak * w + (1 - w) * args.final_lr_frac


def muon_momentum(step, args):
    """Linear warmup from muon_momentum_start, and back to it over the last muon_momentum_cooldown_steps."""
    low, high, warmup, cooldown = (args.muon_momentum_start, args.muon_momentum, args.muon_momentum_warmup_steps,
                                   args.muon_momentum_cooldown_steps)
    if step < warmup:
        return low + step / warmup * (high - low)
    if cooldown and step > args.num_iterations - cooldown:
        return high - (step - (args.num_iterations - cooldown)) / cooldown * (high - low)
    return high


def window_blocks(step, args, validation=False):
    """(long, short) attention windows in 128-token blocks; short = long // 2, at least 1 (the records' 0 keeps
    only the own block). Long in window_schedule's equal stages of the scheduled steps (record 2025-12-31), or
    growing linearly as record 2025-08-23's does (the fewest blocks covering 1728 * step / N tokens, 1728 = 13.5
    blocks, so 1 -> 14, never below window_blocks_start); window_blocks_end after the schedule; the final
    validation's long window val_window_blocks (its short one as the last step's)."""
    N, stages = scheduled_steps(args), args.window_schedule
    if step >= N and stages:
        long = args.window_blocks_end
    elif stages:
        long = stages[int(len(stages) * (step / N))]
    else:
        grown = (args.window_blocks_end - 0.5) * BLOCK * min(step / N, 1)
        long = max(args.window_blocks_start, math.ceil(grown / BLOCK))
    short = max(1, long // 2)
    return (args.val_window_blocks, short) if validation and args.val_window_blocks else (long, short)


def mtp_weights_at(step, args):
    """The weights of the next 3 tokens in the loss (record 2025-12-31): [1, 0.5, 0.25 -> 0] over the first third
    of the scheduled steps, [1, 0.5 -> 0] over the second, [1] after."""
    x = step / scheduled_steps(args)
    if x < 1 / 3:
        return [1.0, 0.5, 0.25 * (1 - 3 * x)]
    return [1.0, 0.5 * (1 - (3 * x - 1)), 0.0] if x < 2 / 3 else [1.0, 0.0, 0.0]


def embed_tied_at(step, args):
    """Whether the embedding is lm_head's weight at this step: until the first odd step at or after
    tied_embed_until of the scheduled steps, on which Adam steps (record 2025-12-31: step 1191)."""
    return args.tied_embed_until > 0 and step <= (math.ceil(args.tied_embed_until * scheduled_steps(args)) | 1)


def adam_steps_at(step, args):
    """Whether Adam steps after this step: on every adam_every-th (record 2025-12-31: the odd ones)."""
    return (step + 1) % args.adam_every == 0


def fp8_bootstrap_at(step):
    """Whether the MLP-out FP8 scale of this step is its weights' amax now (update_fp8_scales): as record
    2026-07-17 sets it after each of its first 16 steps (and before the first), later the delayed one."""
    return step <= 16


def tokens_per_step_at(step, args):
    return [tokens for start, tokens in parse_batch_schedule(args) if start <= step][-1]


def seq_len_at(step, args):
    return tokens_per_step_at(step, args) // args.seqs_per_step if args.seqs_per_step else args.seq_len


def max_doc_len_at(step, args):
    return [n for start, n in parse_schedule(args, "doc_len_schedule", args.max_doc_len) if start <= step][-1]


def rope_base_at(step, args):
    """NTK-aware scaling (bloc97, 2023): base * s^(d/(d-2)) when the long window has grown s-fold."""
    rot_dim = 2 * round(args.head_dim // 2 * args.rope_fraction)  # dims that turn (Rotary)
    if not args.rope_ntk_scaling or rot_dim <= 2:
        return args.rope_base
    growth = window_blocks(step, args)[0] / window_blocks(0, args)[0]
    return args.rope_base * growth ** (rot_dim / (rot_dim - 2))


def yarn_at(step, args):
    """YaRN (Peng et al. 2023) as record 2025-12-31 applies it, replayed over the long window's growths up to
    `step`: -> (RoPE frequencies, the attention scale's gain). At each growth old -> new (blocks), a frequency that
    turns at most once over the old window slows by old/new, one that turns 32 times or more keeps its speed,
    linear in between; the scale grows by 1 + 0.2 ln(new/old)."""
    freq, gain = rope_frequencies(args.head_dim, args.rope_fraction, args.rope_base), 1.0
    longs = [window_blocks(s, args)[0] for s in range(step + 1)]
    for old, new in zip(longs, longs[1:]):
        if new != old:
            freq, gain = yarn_growth(freq, gain, old, new)
    return freq, gain


def yarn_growth(freq, gain, old, new):
    rotations, ratio = BLOCK * old * freq / (2 * torch.pi), old / new
    return freq * (ratio + torch.clamp((rotations - 1) / (32 - 1), 0, 1) * (1 - ratio)), gain * (
        0.2 * math.log(new / old) + 1)


def apply_schedules(step, args, model, muon, adam):
    """Set every step-dependent value for this step; -> window sizes in blocks as a tensor [long, short]."""
    for opt in (muon, adam):
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lr_multiplier(step, args)
    for group in muon.param_groups:
        group["momentum"] = muon_momentum(step, args)
    long = window_blocks(step, args)[0]
    if (args.rope_ntk_scaling or args.yarn) and long != model.rotary.window:  # at a growth, or the first step run
        freq, gain = (yarn_at(step, args) if args.yarn
                      else (rope_frequencies(args.head_dim, args.rope_fraction, rope_base_at(step, args)), 1.0))
        model.rotary.inv_freq.copy_(freq)
        model.rotary.q_gain.fill_(gain)
        model.rotary.window = long
    device = next(model.parameters()).device
    if args.multi_token:
        model.mtp_weights.copy_(to_device(np.array(mtp_weights_at(step, args), dtype=np.float32), device))
    if model.embed_tied and not embed_tied_at(step, args):
        untie_embedding(model, adam)
    update_fp8_scales(model, fp8_bootstrap_at(step))  # after the last step's update, before this step's forward
    return window_tensor(step, args, device)


def untie_embedding(model, adam):
    """The embedding becomes a copy of lm_head's weight, and of its Adam state (record 2025-12-31)."""
    head, embed = model.lm_head.weight, model.embed.weight
    with torch.no_grad():
        embed.copy_(head)
    adam.state[embed] = {k: v.clone() if torch.is_tensor(v) else v for k, v in adam.state[head].items()}
    model.embed_tied = False


def window_tensor(step, args, device, validation=False):
    return to_device(np.array(window_blocks(step, args, validation)), device)


# -----------------------------------------------------------------------------
# FLOPs and MFU


def mean_keys_per_query(window_blocks, T, tokens=False):
    """Average number of keys a query attends to: its own block up to itself and window_blocks - 1 whole
    blocks before it, or with `tokens` itself and window_blocks * 128 tokens before it (documents ignored)."""
    if tokens:
        head = min(T, window_blocks * BLOCK + 1)  # queries whose window reaches back to position 0
        return (head * (head + 1) / 2 + (T - head) * head) / T
    head = min(T, window_blocks * BLOCK)
    steady = (T - head) // BLOCK * (BLOCK * (BLOCK + 1) / 2 + (window_blocks - 1) * BLOCK * BLOCK)
    return (head * (head + 1) / 2 + steady) / T


def flops_per_token(args, step=None):
    """Training FLOPs per token (forward + backward = 3x forward): every matmul incl. lm_head, attention
    within the windows at this step (the last step if None)."""
    D, H, hd, T = args.model_dim, args.num_heads, args.head_dim, args.seq_len
    windows = dict(zip("LS", window_blocks(args.num_iterations if step is None else step, args)))
    forward = 2 * D * args.vocab_size
    for layer in range(args.num_layers):
        if layer not in args.no_attn_layers:
            keys = mean_keys_per_query(windows[args.window_pattern[layer % len(args.window_pattern)]], T,
                                       args.window_tokens)
            forward += 2 * D * 4 * H * hd + 2 * 2 * H * hd * keys  # qkv + out projections, QK^T and AV
            forward += 2 * GATE_CHANNELS * H * args.attn_gate
        if layer not in args.no_mlp_layers:
            forward += 2 * 2 * D * 4 * D
    return 3 * forward


PEAK_BF16_TFLOPS = [  # dense, no sparsity, from NVIDIA's datasheets / architecture whitepapers
    ("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4), ("A100", 312.0),
    ("5090", 209.5), ("4090", 165.2), ("3090", 71.0),  # GeForce: bf16 with fp32 accumulation
]


def peak_flops(device):
    """Peak bf16 FLOP/s of this device, or None when unknown (CPU, unlisted GPUs): MFU is then n/a."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


# -----------------------------------------------------------------------------
# Validation and logging


def gpt2_token_bytes(vocab_size):
    """UTF-8 byte length of every GPT-2 token (0 for EOT and padding), for bits per byte; None without tiktoken."""
    try:
        import tiktoken
        enc = tiktoken.get_encoding("gpt2")
    except Exception as e:  # no tokenizer cache and no internet: report val_bpb as n/a, keep training
        print(f"warning: GPT-2 tokenizer unavailable ({type(e).__name__}), val_bpb will be n/a", file=sys.stderr)
        return None
    lengths = [len(enc.decode_single_token_bytes(i)) for i in range(enc.eot_token)]
    return torch.tensor(lengths + [0] * (vocab_size - len(lengths)), dtype=torch.float64)


@torch.no_grad()
def evaluate(model, val_seqs, args, windows, token_bytes, rank, world_size, device):
    """Mean val loss and bits per byte over the fixed val sequences; rank r takes sequences r, r+world, ..."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, tokens, bytes
    token_bytes = token_bytes.to(device) if token_bytes is not None else None
    mine = val_seqs[rank::world_size]
    rows = max(1, args.micro_batch_seqs * args.seq_len // args.val_seq_len)  # about a training micro-batch
    for start in range(0, len(mine), rows):
        batch = to_device(mine[start:start + rows], device)
        targets = batch[:, 1:]
        totals[0] += model(batch[:, :-1], targets, windows).double() * targets.numel()
        totals[1] += targets.numel()
        if token_bytes is not None:
            totals[2] += token_bytes[targets].sum()
    if world_size > 1:
        dist.all_reduce(totals)
    model.train()
    loss = (totals[0] / totals[1]).item()
    bpb = (totals[0] / math.log(2) / totals[2]).item() if token_bytes is not None else None
    return loss, bpb


class Logger:
    """Rank 0 prints and appends to logs/<run_id>.txt (check_start made logs/); each line is flushed as written."""

    def __init__(self, path, enabled):
        self.path, self.enabled = path, enabled

    def __call__(self, text, console=True):
        if self.enabled and console:
            print(text, flush=True)
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(text + "\n")


def log_header(log, args, argv, world_size, device):
    """Everything needed to reproduce the run: command, hyperparameters, hardware, versions, full source."""
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor()})"
    log(f"run_id: {args.run_id}")
    log(f"command: {' '.join(['train_gpt.py', *argv])}")
    log(f"world_size: {world_size}")
    log(f"device: {device_name} x{world_size}")
    log(f"versions: python {platform.python_version()} torch {torch.__version__} triton"
        f" {triton.__version__ if triton else 'n/a'} cuda {torch.version.cuda or 'n/a'}")
    log(f"hyperparameters: {json.dumps(dataclasses.asdict(args))}")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        log(subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout, console=False)
    with open(__file__) as f:
        log(f"==== source of train_gpt.py ====\n{f.read()}==== end of source ====", console=False)


def start_profiler(args, device):
    """torch.profiler on rank 0 over training steps 3 .. 2 + profile_steps (step 1 checks gradients, step 2 is
    the profiler's warmup). Writes logs/<run_id>/profile.txt (ops by self time on the device, or on the CPU)
    and logs/<run_id>/trace.json (open in ui.perfetto.dev). Profiled steps run slower: not a timing run."""
    from torch.profiler import ProfilerActivity, profile, schedule
    on_cuda, out = device.type == "cuda", f"logs/{args.run_id}"

    def write(prof):
        os.makedirs(out, exist_ok=True)
        order = "self_device_time_total" if on_cuda else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=order, row_limit=50, max_name_column_width=80)
        with open(f"{out}/profile.txt.tmp", "w") as f:
            f.write(f"{args.profile_steps} steps, {args.run_id}\n{table}\n")
        os.replace(f"{out}/profile.txt.tmp", f"{out}/profile.txt")
        prof.export_chrome_trace(f"{out}/trace.json")

    prof = profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * on_cuda, on_trace_ready=write,
                   schedule=schedule(wait=1, warmup=1, active=args.profile_steps, repeat=1))
    prof.start()
    return prof


# -----------------------------------------------------------------------------
# Checkpoints: written atomically with a checksum; the one to resume is read once, as the command line is parsed


def checksum(value):
    """sha256 of nested dicts, lists and tensors (their bytes included), in a fixed order."""
    digest = hashlib.sha256()

    def add(v):
        if isinstance(v, torch.Tensor):
            digest.update(f"tensor {tuple(v.shape)} {v.dtype}".encode())
            digest.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        elif isinstance(v, dict):
            for key in sorted(v, key=repr):
                digest.update(repr(key).encode())
                add(v[key])
        elif isinstance(v, (list, tuple)):
            for item in v:
                add(item)
        else:
            digest.update(repr(v).encode())
    add(value)
    return digest.hexdigest()


def save_atomically(state, path):
    """tmp file + rename: an interrupted save never replaces a good file; a checksum of it all goes with it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save({**state, "checksum": checksum(state)}, path + ".tmp")
    os.replace(path + ".tmp", path)


def save_checkpoint(path, model, muon_state, adam_state, stream, step, train_time_ms, args):
    """Everything a resume needs (the optimizers' whole states, gathered); then the oldest step_*.pt beyond the
    newest keep_checkpoints go."""
    save_atomically(dict(args=dataclasses.asdict(args), step=step, train_time_ms=train_time_ms,
                         model=model.state_dict(), muon=muon_state, adam=adam_state,
                         stream=stream.state_dict(), rng=torch.get_rng_state(),
                         cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None), path)
    if args.keep_checkpoints:
        for old in sorted(glob.glob(os.path.join(os.path.dirname(path), "step_*.pt")))[:-args.keep_checkpoints]:
            os.remove(old)


def read_checkpoint(path):
    """A checkpoint (or an export) on the CPU, refused unless its contents match the checksum written with them."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a missing file, a text file, a truncated or overwritten zip, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot read checkpoint {path}: {reason}") from None
    if not (isinstance(state, dict) and {"args", "model", "checksum"} <= state.keys()):
        raise ConfigError(f"{path} is not a train_gpt.py checkpoint (no args, model and checksum)")
    if state["checksum"] != checksum({k: v for k, v in state.items() if k != "checksum"}):
        raise ConfigError(f"{path}: its contents do not match their checksum (the file is damaged); use another")
    return state


def checkpoint_hyperparameters(state):
    """The hyperparameters a checkpoint was trained with; fields this file no longer has are dropped."""
    return {k: v for k, v in state["args"].items() if k in typing.get_type_hints(Hyperparameters)}


def find_checkpoint(resume, run_id):
    """--resume's checkpoint as (path, contents), or None: "auto" is run_id's newest checkpoint that loads and
    checks out, if it has one."""
    if resume != "auto":
        return (resume, read_checkpoint(resume)) if resume else None
    if not run_id:
        raise ConfigError("--resume=auto needs --run_id=NAME: it continues that run from its newest checkpoint")
    steps = lambda path: float("inf") if path.endswith("final.pt") else int(re.findall(r"\d+", path)[-1])
    for path in sorted(glob.glob(f"logs/{run_id}/step_*.pt") + glob.glob(f"logs/{run_id}/final.pt"), key=steps,
                       reverse=True):
        with contextlib.suppress(ConfigError):
            return path, read_checkpoint(path)
    return None


def restore(state, model, muon, adam, stream):
    """Restore model, optimizers, loader position and RNG from a checkpoint's contents; -> (step, train_time_ms)."""
    for name, part in dict(model=model, muon=muon, adam=adam, stream=stream).items():
        part.load_state_dict(state[name])
    model.embed_tied = embed_tied_at(max(state["step"] - 1, 0), model.args)  # as the last step left it
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["step"], state["train_time_ms"]


def export_weights(args, checkpoint):
    """--export: the weights of --resume's checkpoint in bf16 with its hyperparameters, for sampling or
    fine-tuning elsewhere (`--sample=` reads it too)."""
    if not checkpoint:
        raise ConfigError("--export needs --resume=CHECKPOINT, the checkpoint to export")
    path, state = checkpoint
    weights = {k: v.bfloat16() if v.is_floating_point() else v for k, v in state["model"].items()}
    save_atomically(dict(args=state["args"], step=state["step"], model=weights), args.export)
    print(f"exported {sum(v.numel() for v in weights.values()):,} weights (bf16) of {path} at step"
          f" {state['step']} to {args.export}")


# -----------------------------------------------------------------------------
# Training


def train_step(model, raw_model, micro_batches, windows, muon, adam, check_grads=False, adam_steps=True):
    """Forward/backward over this rank's micro-batches, average gradients over micro-batches and ranks, then
    step Muon, and Adam if adam_steps (else Adam holds the gradients until it does, as record 2025-12-31's add
    up). -> train loss per token (a device tensor: no host sync here)."""
    loss_sum = 0
    for i, batch in enumerate(micro_batches):
        if i == len(micro_batches) - 1:  # this backward's gradients are the step's: as each is done, it is
            muon.arm()  # reduce-scattered (Muon's, by shape) or all-reduced (Adam's) over the ranks
            adam.arm()
        loss = model(batch[:, :-1], batch[:, 1:], windows)
        (loss / len(micro_batches)).backward()
        loss_sum += loss.detach()
    if check_grads:
        check_gradients(raw_model)
    muon.step()  # Adam's reductions go on meanwhile
    muon.zero_grad(set_to_none=True)
    adam.step() if adam_steps else adam.hold()
    adam.zero_grad(set_to_none=True)
    return loss_sum / (len(micro_batches) * (micro_batches.size(-1) - 1))  # the loss is summed per sequence


def warmup_compile(model, raw_model, args, muon, adam, device, world_size):
    """Untimed steps on random tokens so torch.compile builds its kernels (warmup_steps across the run, and the first
    of each graph's: record 2025-12-31's batch stages and untying); then restore every state. -> steps run"""
    if args.warmup_steps <= 0:
        return 0
    saved = copy.deepcopy(dict(model=raw_model.state_dict(), muon=muon.state_dict(), adam=adam.state_dict()))
    N, steps = args.num_iterations, {i * args.num_iterations // args.warmup_steps for i in range(args.warmup_steps)}
    firsts = {}  # the first step of each sequence length and tie of the embedding: each traces a graph of its own
    for step in range(N):
        firsts.setdefault((seq_len_at(step, args), embed_tied_at(step, args)), step)
    for i, step in enumerate(sorted(steps | set(firsts.values()))):
        T = seq_len_at(step, args)
        accum = grad_accum_steps(tokens_per_step_at(step, args), world_size, args.micro_batch_seqs * T)
        batches = torch.randint(0, args.vocab_size, (accum, args.micro_batch_seqs, T + 1), device=device)
        windows = apply_schedules(step, args, raw_model, muon, adam)
        train_step(model, raw_model, batches, windows, muon, adam, adam_steps=adam_steps_at(i, args))
    raw_model.zero_grad(set_to_none=True)
    for part, state in zip((raw_model, muon, adam), saved.values()):
        part.load_state_dict(state)
    raw_model.embed_tied, raw_model.rotary.window = embed_tied_at(0, args), None  # as built
    return i + 1


def parameter_counts(model):
    groups = param_groups(model)
    count = lambda ps: sum(p.numel() for p in ps)
    return dict(total=count(model.parameters()), embeddings=count(groups["embed"] + groups["bigram"]),
                matrices=count(groups["muon"]),
                lm_head=count(groups["head"]), scalars=count(groups["scalar"]))


def check_start(args, rank, world_size):
    """Everything that can be known wrong before the log is created: data, batch arithmetic, where the log and
    checkpoints go. A failed start leaves no file behind and does not use up the run_id. -> the train stream
    and the val sequences, read once here."""
    stream = TokenStream(args.train_files, seq_len_at(0, args), args.micro_batch_seqs, args.seed, args.align_to_doc,
                         rank, world_size, args.max_doc_len)
    val_seqs = load_val_sequences(args.val_files, args.val_tokens, args.val_seq_len)
    for stage_start, tokens in parse_batch_schedule(args):
        grad_accum_steps(tokens, world_size, args.micro_batch_seqs * seq_len_at(stage_start, args))
    for folder in ("logs", f"logs/{args.run_id}"):
        try:
            if os.path.exists(folder) or folder == "logs":
                os.makedirs(folder, exist_ok=True)
                tempfile.TemporaryFile(dir=folder).close()
        except OSError as e:
            raise ConfigError(f"cannot write to {folder}/ ({e.strerror or e}); run where it is writable") from None
    return stream, val_seqs


def train(args, argv, checkpoint):
    rank, world_size, device = setup_distributed(args.device, args.cpu_threads, args.collective_timeout)
    if device.type == "cuda" and "expandable_segments" not in os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""):
        # segments grow in place instead of one cached per size (record 2025-08-23 sets it; README says what
        # the virtual H100 reserved without it)
        torch.cuda.memory._set_allocator_settings("expandable_segments:True")
    if args.memory_cap_gib and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * 2**30 / total), device)
    torch.manual_seed(args.seed)
    run_id = args.run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    named = [run_id, os.path.exists(f"logs/{run_id}.txt")]
    if world_size > 1:
        dist.broadcast_object_list(named, src=0)  # rank 0's fresh id and its answer, before anything is written
    run_id, log_exists = named
    if log_exists and args.resume != "auto":
        raise ConfigError(f"logs/{run_id}.txt already exists; choose another --run_id (or continue it with"
                          " --resume=auto)")
    args = dataclasses.replace(args, run_id=run_id)
    stream, val_seqs = check_start(args, rank, world_size)
    log = Logger(f"logs/{args.run_id}.txt", rank == 0)
    log_header(log, args, argv, world_size, device)
    log(f"log: logs/{args.run_id}.txt checkpoints: logs/{args.run_id}/")

    raw_model = build_model(args, device)
    log(f"parameters: {json.dumps(parameter_counts(raw_model))} fp8_head: {raw_model.use_fp8}")
    model = torch.compile(raw_model, mode=args.compile_mode or None, dynamic=False) if args.compile else raw_model
    muon, adam = build_optimizers(raw_model, args, rank, world_size)
    warmup_start = time.perf_counter()
    if warmed := warmup_compile(model, raw_model, args, muon, adam, device, world_size):
        log(f"warmup: {warmed} untimed steps (compilation) took {time.perf_counter() - warmup_start:.1f}s")

    token_bytes = gpt2_token_bytes(args.vocab_size)
    step, train_time_ms = 0, 0.0
    if checkpoint:
        step, train_time_ms = restore(checkpoint[1], raw_model, muon, adam, stream)
        log(f"resumed{' (auto)' if args.resume == 'auto' else ''} from {checkpoint[0]} at step {step}")
        checkpoint[1].clear()  # the model and optimizers hold copies now: the host memory of the file's goes
    run = Run(args, model, raw_model, muon, adam, stream, val_seqs, token_bytes, log, rank, world_size, device)
    if rank == 0:  # the others' logs are off: no need to walk the shard there
        log("\n".join(stream.first_shard_report(tokens_per_step_at(0, args), run.tokens_before[-1])))
    stopped = run_loop(run, step, train_time_ms)
    peaks = ((torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()) if device.type == "cuda"
             else [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024] * 2)  # CPU: peak resident memory
    log(f"peak memory allocated: {peaks[0] // 2**20} MiB reserved: {peaks[1] // 2**20} MiB")
    if world_size > 1:  # rank 0 may still be writing a checkpoint: leave together, then tear down
        dist.barrier()
    saved = sorted(glob.glob(f"logs/{args.run_id}/*.pt"), key=os.path.getmtime)
    if stopped:
        signum, step = stopped
        where = (f"checkpoint {saved[-1]}; continue with --run_id={args.run_id} --resume=auto" if saved
                 else "no checkpoint")
        log(f"stopped by {signal.Signals(signum).name} after step {step}: {where}")
        raise SystemExit(128 + signum)
    log(f"done: log logs/{args.run_id}.txt, checkpoint {saved[-1] if saved else 'none (--save_checkpoint=false)'}")


STOP_CHECK_EVERY = 10  # steps between the ranks' looks at the store for a stop request (a TCP round trip each)


class StopRequest:
    """SIGTERM or SIGINT (a preemption, Ctrl-C): the run checkpoints and exits 128 + the signal (143, 130); a
    second Ctrl-C stops at once. One process stops after the step in progress. Several agree on the step through
    the process group's store, without a GPU sync: the first rank to see the signal names the first multiple of
    STOP_CHECK_EVERY two or more steps on, which no rank has passed (none is a step ahead of another), and ranks
    look at the store only at those multiples: a stop comes at most STOP_CHECK_EVERY + 1 steps after the signal."""

    def __init__(self, world_size):
        self.signal, self.named = None, None  # named: (step, signal) the ranks stop at
        self.store = dist.distributed_c10d._get_default_store() if world_size > 1 else None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.catch)

    def catch(self, signum, frame):
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = self.signal or signum

    def stop_at(self, step):
        """(step to stop at, the signal) once a stop is asked for (`step` steps are done), else None."""
        if self.store is None:
            return (step, self.signal) if self.signal else None
        if self.named is None and self.signal:
            ahead = -(-(step + 2) // STOP_CHECK_EVERY) * STOP_CHECK_EVERY
            self.store.compare_set("stop_at", "", f"{ahead} {self.signal}")  # the first rank's word stands
        if self.named is None and (self.signal or step % STOP_CHECK_EVERY == 0) and self.store.check(["stop_at"]):
            self.named = tuple(map(int, self.store.get("stop_at").split()))
        return self.named


@dataclass
class Run:
    """What the training loop works with, made by train()."""
    args: Hyperparameters
    model: nn.Module  # raw_model, compiled (--compile) or not
    raw_model: GPT
    muon: Muon
    adam: Adam
    stream: TokenStream
    val_seqs: np.ndarray
    token_bytes: typing.Optional[torch.Tensor]  # for bits per byte; None without tiktoken
    log: Logger
    rank: int
    world_size: int
    device: torch.device

    @functools.cached_property
    def tokens_before(self):
        """Tokens trained on before each step, 0 .. num_iterations: the batch schedule summed once."""
        return [0, *itertools.accumulate(tokens_per_step_at(s, self.args) for s in range(self.args.num_iterations))]


class Clock:
    """train_time: the wall-clock of training steps only, each counted once; it stops for validation, checkpoints
    and a profile's trace (as the records count it). Read after the GPU's queued work is done."""

    def __init__(self, ms, device):
        self.ms, self.sync = ms, torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.start()

    def start(self):
        self.sync()
        self.started = time.perf_counter()

    def now(self):
        self.sync()
        return self.ms + 1000 * (time.perf_counter() - self.started)

    def stop(self):
        self.ms = self.now()


def run_loop(run, step, train_time_ms):
    """Steps from `step` to num_iterations; -> (signal, step) if a signal stopped it. Train loss is read back only
    at log steps, so there is no per-step host sync."""
    args, N, start = run.args, run.args.num_iterations, step
    profiler = start_profiler(args, run.device) if args.profile_steps and run.rank == 0 else None
    stop, clock = StopRequest(run.world_size), Clock(train_time_ms, run.device)
    losses = TrainLosses(run, step, train_time_ms)
    try:
        while True:
            stop_request = stop.stop_at(step)
            last, stop_now = step == N, stop_request is not None and stop_request[0] == step
            validating = last or (args.val_loss_every and step % args.val_loss_every == 0)
            saving = (last or stop_now
                      or (args.checkpoint_every and step % args.checkpoint_every == 0 and step > start))
            if validating or saving:
                clock.stop()
                if validating and not stop_now:
                    log_validation(run, step, clock.ms)
                if saving and args.save_checkpoint:
                    optimizers = run.muon.state_dict(), run.adam.state_dict()  # every rank: they gather its part
                    path = f"logs/{args.run_id}/{'final' if last else f'step_{step:06d}'}.pt"
                    if run.rank == 0:
                        save_checkpoint(path, run.raw_model, *optimizers, run.stream, step, clock.ms, args)
                if last or stop_now:
                    if profiler is not None:
                        profiler.stop()
                        run.log(f"profile: logs/{args.run_id}/profile.txt, trace: logs/{args.run_id}/trace.json")
                    return (stop_request[1], step) if stop_now else None
                clock.start()
            windows, epoch = apply_schedules(step, args, run.raw_model, run.muon, run.adam), run.stream.epoch
            batches = to_device(run.stream.next_step(tokens_per_step_at(step, args), seq_len_at(step, args),
                                                     max_doc_len_at(step, args)),
                                run.device)
            if run.stream.epoch != epoch:
                run.log(f"epoch {run.stream.epoch + 1} begins at step {step + 1}, after {run.tokens_before[step]}"
                        " tokens: from here the run repeats its training data")
            loss = train_step(run.model, run.raw_model, batches, windows, run.muon, run.adam,
                              check_grads=step == 0, adam_steps=adam_steps_at(step, args))
            step += 1  # numbered like the log lines: step:1 is the loss of the first step
            if profiler is not None:  # the profiler writes its trace in a step() call: not training time
                clock.stop()
                profiler.step()
                clock.start()
            losses.add(loss, step)
            if step % args.train_log_every == 0 or step in (1, 10, N):  # early lines show the run is alive
                losses.log(step, clock)
    except (RuntimeError, dist.DistBackendError) as e:  # gloo's word for a rank that died or stopped answering
        if run.world_size > 1 and re.search(r"time[d ]?out|peer|connection", str(e), re.I):
            raise RankFailure(f"rank {run.rank}: no answer from another rank within --collective_timeout="
                              f"{args.collective_timeout:g}s after step {step} (one died or hangs); stopping") from None
        raise


def log_validation(run, step, train_time_ms):
    args = run.args
    windows = window_tensor(step, args, run.device, validation=step == args.num_iterations)
    loss, bpb = evaluate(run.model, run.val_seqs, args, windows, run.token_bytes, run.rank, run.world_size, run.device)
    run.log(f"step:{step}/{args.num_iterations} val_loss:{loss:.4f} val_bpb:{'n/a' if bpb is None else f'{bpb:.4f}'}"
            f" train_time:{train_time_ms:.0f}ms step_avg:{train_time_ms / max(step, 1):.2f}ms"
            f" tokens:{run.tokens_before[step]}")


class TrainLosses:
    """The train losses since the last train line, summed on the device, and the first non-finite one."""

    def __init__(self, run, step, train_time_ms):
        self.run, self.peak = run, peak_flops(run.device)
        self.sum, self.logged_step, self.logged_ms = torch.zeros((), device=run.device), step, train_time_ms
        self.first_bad = torch.full((), run.args.num_iterations + 1, device=run.device)  # its step; N + 1 = none

    def add(self, loss, step):
        self.sum += loss
        self.first_bad = torch.where(torch.isfinite(loss), self.first_bad, self.first_bad.clamp(max=step))
        self.last = loss

    def log(self, step, clock):
        """A train line: mean loss since the last one, its tok/s and MFU, and the eta at the run's step_avg."""
        run, args, N, peak = self.run, self.run.args, self.run.args.num_iterations, self.peak
        if run.world_size > 1:  # each rank holds its own share of the batch: log the whole batch's mean
            dist.all_reduce(self.sum)
            self.sum /= run.world_size
            dist.all_reduce(self.first_bad, op=dist.ReduceOp.MIN)
        if args.check_finite and self.first_bad.item() <= N:
            raise FloatingPointError(f"loss is {self.last.item()} (non-finite) at step {self.first_bad.item()}; "
                                     "lower the learning rates or check the data")
        now_ms = clock.now()
        interval_s = max(now_ms - self.logged_ms, 1e-3) / 1000
        tok_per_s = (run.tokens_before[step] - run.tokens_before[self.logged_step]) / interval_s
        mfu = f"{100 * flops_per_token(args, step) * tok_per_s / (peak * run.world_size):.1f}%" if peak else "n/a"
        eta_s = round((N - step) * now_ms / step / 1000)
        run.log(f"step:{step}/{N} train_loss:{(self.sum / (step - self.logged_step)).item():.4f}"
                f" train_time:{now_ms:.0f}ms step_avg:{now_ms / step:.2f}ms tokens:{run.tokens_before[step]}"
                f" epoch:{run.stream.epoch + 1} tok/s:{tok_per_s:.0f} mfu:{mfu} eta:{eta_s // 60}m{eta_s % 60:02d}s")
        self.sum.zero_()
        self.logged_step, self.logged_ms = step, now_ms


# -----------------------------------------------------------------------------
# Sampling


@torch.no_grad()
def sample(args):
    """Generate from a checkpoint with top-k / temperature, with the same masks, smear and bigram inputs as
    training: the prompt is a document (EOT first), padded to whole attention blocks."""
    import tiktoken
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    state = read_checkpoint(args.sample)
    train_args = Hyperparameters(**checkpoint_hyperparameters(state))
    print(f"sampling from {args.sample} (step {state['step']}, preset {train_args.preset!r}): model fields given here"
          " are ignored; --prompt, --max_new_tokens, --temperature, --top_k, --seed, --device apply", file=sys.stderr)
    model = build_model(train_args, device).eval()
    model.load_state_dict(state["model"])
    model.embed_tied = embed_tied_at(max(state["step"] - 1, 0), train_args)  # as the run's last step left it
    enc = tiktoken.get_encoding("gpt2")
    prompt_ids = [EOT] + enc.encode_ordinary(args.prompt)
    ids = list(prompt_ids)
    windows = window_tensor(train_args.num_iterations, train_args, device, validation=True)
    generator = torch.Generator(device).manual_seed(args.seed)
    for _ in range(args.max_new_tokens):
        padded = ids + [EOT] * (-len(ids) % BLOCK)
        logits = model(torch.tensor([padded], device=device), windows=windows)[0, len(ids) - 1, :enc.n_vocab]
        logits = logits / max(args.temperature, 1e-6)
        if args.top_k:
            kth = torch.topk(logits, min(args.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, -float("inf"))
        next_id = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).item()
        if next_id == EOT:
            break
        ids.append(next_id)
    text = args.prompt + enc.decode(ids[len(prompt_ids):])
    print(text)
    return text


# -----------------------------------------------------------------------------
# Entry point


def main(argv):
    try:
        args, checkpoint = parse_command_line(argv)
        if args.sample:
            return sample(args)
        if args.export:
            return export_weights(args, checkpoint)
        train(args, argv, checkpoint)
    except (ConfigError, ShardError, FloatingPointError, RankFailure) as e:
        sys.exit(f"train_gpt.py: {e}")
    except torch.OutOfMemoryError:
        sys.exit("train_gpt.py: out of GPU memory. Lower --micro_batch_seqs or --seq_len (gradient accumulation "
                 "keeps tokens_per_step), or use --preset=4090; --fp8_head=on and --compile=true also save memory")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
