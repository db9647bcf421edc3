"""cached_fineweb10B.py run for real as a subprocess, against a closed port and a local stand-in for the HF hub."""
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from train_gpt import read_shard, write_shard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "cached_fineweb10B.py")
PREFIX = "/datasets/kjj0/fineweb10B-gpt2/resolve/main/"
NAMES = ["fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"]


class FakeHub:
    """Serves files the way the hub's resolve endpoint does, as far as hf_hub_download needs:
    HEAD and GET with X-Repo-Commit, ETag and Content-Length. status=500 makes every request fail."""

    def __init__(self, files, status=200):
        self.files, self.status, self.requests = files, status, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def respond(self, with_body):
                hub.requests.append((self.command, self.path))
                name = self.path[len(PREFIX):] if self.path.startswith(PREFIX) else None
                body = hub.files.get(name)
                if hub.status != 200 or body is None:
                    self.send_response(hub.status if hub.status != 200 else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
                self.send_header("ETag", '"%s"' % hashlib.sha256(body).hexdigest())
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_HEAD(self):
                self.respond(False)

            def do_GET(self):
                self.respond(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def shard_bytes(tmp_path, seed, n=3000):
    tokens = np.random.default_rng(seed).integers(0, 50257, n)
    path = tmp_path / f"src{seed}.bin"
    write_shard(path, tokens)
    return path.read_bytes(), tokens


def run(tmp_path, endpoint, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1")
    start = time.time()
    proc = subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60)
    return proc, time.time() - start


def last_line(text):
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "fineweb10B"
    path.mkdir()
    return path


def test_unreachable_hub_fails_fast_with_one_line(tmp_path, target):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    proc, elapsed = run(tmp_path, f"http://127.0.0.1:{port}", "2", "--dir", str(target))
    assert proc.returncode != 0
    assert elapsed < 60
    assert "Traceback" not in proc.stderr
    assert "cannot reach the Hugging Face hub" in last_line(proc.stderr)
    assert "fineweb_val_000000.bin" in last_line(proc.stderr)
    assert os.listdir(target) == []


def test_hub_http_error_fails_fast_without_retrying(tmp_path, target):
    hub = FakeHub({}, status=500)
    try:
        proc, elapsed = run(tmp_path, hub.url, "1", "--dir", str(target))
    finally:
        hub.close()
    assert proc.returncode != 0 and elapsed < 20
    assert "Traceback" not in proc.stderr and "cannot reach" in last_line(proc.stderr)
    assert len(hub.requests) == 1  # huggingface_hub's retry loop would make 6 over ~25 s
    assert os.listdir(target) == []


def test_download_then_skip(tmp_path, target):
    shards = {name: shard_bytes(tmp_path, seed) for seed, name in enumerate(NAMES)}
    hub = FakeHub({name: data for name, (data, _) in shards.items()})
    try:
        proc, _ = run(tmp_path, hub.url, "2", "--dir", str(target))
        assert proc.returncode == 0, proc.stderr
        assert sorted(os.listdir(target)) == sorted(NAMES)  # nothing else: no temp dir, no .cache
        for name, (_, tokens) in shards.items():
            np.testing.assert_array_equal(read_shard(target / name), tokens)
        assert "[3/3] fineweb_train_000002.bin" in proc.stdout
        n_requests = len(hub.requests)
        assert n_requests >= len(NAMES)

        proc, _ = run(tmp_path, hub.url, "2", "--dir", str(target))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("skipped") == len(NAMES)
        assert len(hub.requests) == n_requests  # the second run asked the hub nothing
    finally:
        hub.close()


def test_present_but_invalid_file_is_fetched_again(tmp_path, target):
    shards = {name: shard_bytes(tmp_path, seed) for seed, name in enumerate(NAMES[:2])}
    (target / NAMES[1]).write_bytes(shards[NAMES[1]][0][:-10])  # truncated: the length check fails
    write_shard(target / NAMES[0], shards[NAMES[0]][1])  # valid: skipped
    hub = FakeHub({name: data for name, (data, _) in shards.items()})
    try:
        proc, _ = run(tmp_path, hub.url, "1", "--dir", str(target))
    finally:
        hub.close()
    assert proc.returncode == 0, proc.stderr
    assert "fineweb_val_000000.bin: already present and valid, skipped" in proc.stdout
    assert "fineweb_train_000001.bin: present but invalid" in proc.stdout
    assert all(path != PREFIX + NAMES[0] for _, path in hub.requests)
    np.testing.assert_array_equal(read_shard(target / NAMES[1]), shards[NAMES[1]][1])
    assert sorted(os.listdir(target)) == sorted(NAMES[:2])


def test_bad_shard_from_hub_is_deleted_and_named(tmp_path, target):
    data = bytearray(shard_bytes(tmp_path, 0)[0])
    data[:4] = np.int32(12345).tobytes()  # wrong magic number
    hub = FakeHub({NAMES[0]: bytes(data)})
    try:
        proc, _ = run(tmp_path, hub.url, "1", "--dir", str(target))
    finally:
        hub.close()
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    line = last_line(proc.stderr)
    assert "bad download of fineweb_val_000000.bin" in line and "magic number 12345" in line
    assert os.listdir(target) == []


@pytest.mark.parametrize("arg", ["0", "-1", "two", "1.5"])
def test_bad_argument_is_a_one_line_usage_error(tmp_path, arg):
    proc, _ = run(tmp_path, "http://127.0.0.1:9", arg, "--dir", str(tmp_path / "never"))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("usage:")
    assert not (tmp_path / "never").exists()
