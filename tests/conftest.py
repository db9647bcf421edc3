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


@pytest.fixture
def proxy_dir():
    """../shared/proxy: GPT-2-tokenized Wikipedia shards; tests that need real text skip without it."""
    path = SHARED / "proxy"
    if not path.is_dir():
        pytest.skip("../shared/proxy is absent (clone-only checkout)")
    return path


@pytest.fixture
def gpt2_encoding():
    """tiktoken's gpt2 encoding from ../shared/tiktoken_cache (there is no internet here)."""
    if not (SHARED / "tiktoken_cache").is_dir():
        pytest.skip("../shared/tiktoken_cache is absent")
    import tiktoken
    return tiktoken.get_encoding("gpt2")
