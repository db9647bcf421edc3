"""Shared fixtures: the repo root on sys.path, ../shared (real text and tokenizer) when it is present."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
if (SHARED / "tiktoken_cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))


@pytest.fixture(scope="session")
def proxy_dir():
    """../shared/proxy: GPT-2-tokenized Wikipedia shards; tests that need real text skip without it."""
    path = SHARED / "proxy"
    if not path.is_dir():
        pytest.skip("../shared/proxy is absent (clone-only checkout)")
    return path


@pytest.fixture(scope="session")
def record_compile_cache(tmp_path_factory):
    """VGPU_CACHE for the two tests that compile the 2025-08-23 record's own script on the virtual GPU (the GPU
    check's dry-run and the virtual GPU's report): the second finds its kernels compiled, ~4 of CI's minutes."""
    return {**os.environ, "VGPU_CACHE": str(tmp_path_factory.mktemp("record_compile_cache"))}


@pytest.fixture(scope="session")
def gpt2_encoding():
    """tiktoken's gpt2 encoding from ../shared/tiktoken_cache (there is no internet here)."""
    if not (SHARED / "tiktoken_cache").is_dir():
        pytest.skip("../shared/tiktoken_cache is absent")
    import tiktoken
    return tiktoken.get_encoding("gpt2")

# glibc returns big freed buffers (vocab-sized logits) to the OS after every op; keeping them halves the CPU
# step time of the training subprocesses the tests start
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(2**32))
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(2**32))

TINY = ["--preset=cpu", "--num_layers=4", "--model_dim=64", "--num_heads=2", "--head_dim=32", "--seq_len=128",
        "--micro_batch_seqs=2", "--tokens_per_step=512", "--smear_gate=true", "--bigram_embed=1", "--backout=true"]


def tiny_args(*overrides):
    """The cpu preset shrunk further with every trick on (the record's and the later ones), for unit tests;
    overrides as --field=value strings."""
    import train_gpt
    return train_gpt.parse_args([*TINY, *overrides])


def random_batch(args, accum=1, seed=0, doc_len=40):
    """(accum, micro_batch_seqs, seq_len + 1) random GPT-2 tokens with an EOT about every doc_len tokens."""
    import torch
    import train_gpt
    gen = torch.Generator().manual_seed(seed)
    batch = torch.randint(0, train_gpt.EOT, (accum, args.micro_batch_seqs, args.seq_len + 1), generator=gen)
    return batch.masked_fill(torch.rand(batch.shape, generator=gen) < 1 / doc_len, train_gpt.EOT)
