"""Shared fixtures: the repo root on sys.path, ../shared (real text and tokenizer) when it is present, train_gpt.py
run in a process of its own, synthetic shards; and the test tiers. Tests that start train_gpt.py runs are marked
e2e, the virtual GPU's are marked vgpu, the records' training runs against their code (tests/test_record.py) slow;
the edit loop leaves all three out:

    python -m pytest tests -q -m "not e2e and not vgpu and not slow"
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SCRIPT = str(ROOT / "train_gpt.py")
sys.path.insert(0, str(ROOT))
E2E_MODULES = {"test_train", "test_faults"}  # every test there runs train_gpt.py in processes of its own
VGPU_MODULES = {"test_virtual_gpu"}  # and any test that takes the virtual_gpu fixture


def pytest_collection_modifyitems(items):
    shares_cache = lambda item: "record_compile_cache" in getattr(item, "fixturenames", ())
    e2e = lambda item: item.module.__name__ in E2E_MODULES
    # the longest groups first, so that with --dist loadgroup each worker starts on one while the other takes the
    # rest: the two record_compile_cache tests (their order kept: the second finds the first's kernels), then e2e
    items.sort(key=lambda item: (not shares_cache(item), not e2e(item)))
    for item in items:
        if e2e(item):
            item.add_marker(pytest.mark.e2e)
        if item.module.__name__ in VGPU_MODULES or "virtual_gpu" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.vgpu)
        # with pytest-xdist's --dist loadgroup (.ci/run): a module's tests run on one worker, so that its fixtures
        # are made once; the two tests that share record_compile_cache on the same one; and the e2e modules on one
        # worker, one run at a time: two CPU runs of a record preset at 2 processes each, one from each worker,
        # beside the workers' own memory, took CI's 24 GB to an out-of-memory kill (2026-11-28)
        group = "record_compile_cache" if shares_cache(item) else "e2e" if e2e(item) else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))
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
def virtual_gpu():
    """tools/virtual_gpu.py as a module (its top level is stdlib only); skips without its CUDA build of torch."""
    sys.path.insert(0, str(ROOT / "tools"))
    import virtual_gpu as module
    if module.cuda_python() is None:
        pytest.skip("no CUDA build of torch: run `python tools/virtual_gpu.py setup` or set VGPU_PYTHON")
    return module


def run(cwd, *argv, nproc=1, check=True, env=None):
    """Run train_gpt.py (under torchrun for nproc > 1) in cwd; -> CompletedProcess."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = (launcher if nproc > 1 else [sys.executable]) + [SCRIPT, *argv]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def step_lines(log_path, kind):
    """{step: loss} of the log's val or train lines."""
    pattern = re.compile(rf"^step:(\d+)/\d+ {kind}_loss:(\S+)", re.M)
    return {int(s): float(v) for s, v in pattern.findall(log_path.read_text())}


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """Two small train shards and a val shard of random tokens with documents: -> (dir, extra argv)."""
    import numpy as np
    import train_gpt as tg
    path = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name in ("syn_train_000001.bin", "syn_train_000002.bin", "syn_val_000000.bin"):
        tokens = rng.integers(0, 2000, 40_000)  # a small effective vocabulary, so there is something to learn
        tokens[rng.random(40_000) < 1 / 60] = tg.EOT
        tg.write_shard(path / name, tokens)
    return path, [f"--train_files={path}/syn_train_*.bin", f"--val_files={path}/syn_val_*.bin", "--val_tokens=4096"]


@pytest.fixture(scope="session")
def record_compile_cache(tmp_path_factory):
    """VGPU_CACHE for the two tests that compile --preset=record on the virtual H100 (the virtual GPU's check and
    its report beside the record's script): the second finds our kernels compiled."""
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


def long_documents(path, lengths=(3000, 180, 2200, 90, 4100, 1500, 700, 2600)):
    """A shard of a few long documents of these token counts (EOT included), each token but the EOTs its own
    position as id, so that a token read names where it was read. -> glob pattern"""
    import numpy as np
    import train_gpt as tg
    tokens = np.arange(sum(lengths))
    tokens[np.cumsum([0, *lengths[:-1]])] = tg.EOT
    tg.write_shard(path / "long_train_000001.bin", tokens)
    return str(path / "long_train_*.bin")


def positions_read_in_first_epoch(stream, tokens_per_step):
    """Walk the stream through its first epoch and name every position of a long_documents shard its batches hold."""
    import train_gpt as tg
    read = set()
    while stream.epoch == 0:  # the step that crosses into epoch 2 reads the shard's start again: counted once
        for seq in stream.next_step(tokens_per_step).reshape(-1, stream.seq_len + 1).tolist():
            for i, token in enumerate(seq):  # an EOT is named by its neighbour
                read.add(token if token != tg.EOT else seq[i + 1] - 1 if i + 1 < len(seq) else seq[i - 1] + 1)
    return read
