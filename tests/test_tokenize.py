"""data/tokenize_shards.py: text/jsonl -> shards that round-trip exactly, for any worker count; bad input."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import train_gpt
from conftest import long_documents, positions_read_in_first_epoch

SCRIPT = Path(__file__).resolve().parents[1] / "data" / "tokenize_shards.py"
SHARD_TOKENS, VAL_TOKENS = 32_768, 10_000

TXT_DOCS = [
    "A plain text file is one document.\nIt keeps its newlines,\r\nits CRLF and\ttabs,\n\nand blank lines.\n",
    "Ünïcödé: naïve café, 日本語のテキスト, emoji 🚀🎉, Ελληνικά, and a literal <|endoftext|> that is only text.",
]
JSONL_DOCS = [
    "first json document\nwith a newline inside",
    "second: 中文 and ünïcode, \"quotes\" and back\\slashes",
    "",  # an empty document is still a document: just its EOT
    "third one, a bit longer. " * 8,
]
MANY_DOCS = [f"short document {i}:" + " word" * (i * 7 % 23) for i in range(100)]  # several imap chunks of 16
# ~125k tokens in the first chunk: a worker is busy with it while others finish later chunks, so out-of-order
# results (imap_unordered) would show; it also fills several shards and crosses their boundaries
BIG_DOC = " ".join(f"line {i}: the quick brown fox, number {i * 7919 % 1000}." for i in range(10_000))


def load_script():
    spec = importlib.util.spec_from_file_location("tokenize_shards", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_script(*args):
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_script(*args):
    process = start_script(*args)
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


def write_corpus(tmp_path):
    """corpus/{0_big.txt, a.txt, sub/b.txt, sub/many.jsonl} through the directory, c.jsonl named; -> inputs, docs."""
    (tmp_path / "corpus" / "sub").mkdir(parents=True)
    (tmp_path / "corpus" / "0_big.txt").write_text(BIG_DOC)
    (tmp_path / "corpus" / "a.txt").write_bytes(TXT_DOCS[0].encode())  # bytes: keep the \r\n as written
    (tmp_path / "corpus" / "sub" / "b.txt").write_text(TXT_DOCS[1], encoding="utf-8")
    (tmp_path / "corpus" / "sub" / "many.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in MANY_DOCS))
    lines = [json.dumps({"text": doc, "id": i}, ensure_ascii=i % 2 == 0) for i, doc in enumerate(JSONL_DOCS)]
    lines.insert(2, "   ")  # blank lines are skipped
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [tmp_path / "corpus", tmp_path / "c.jsonl"], [BIG_DOC] + TXT_DOCS + MANY_DOCS + JSONL_DOCS


def shard_paths(out, name="mine"):
    return sorted(out.glob(f"{name}_val_*.bin")) + sorted(out.glob(f"{name}_train_*.bin"))


def test_shards_round_trip_exactly_for_any_worker_count(tmp_path, gpt2_encoding):
    inputs, docs = write_corpus(tmp_path)
    runs = {workers: start_script(*inputs, "--name", "mine", "--out", tmp_path / f"w{workers}", "--workers", workers,
                                  "--shard_tokens", SHARD_TOKENS, "--val_tokens", VAL_TOKENS) for workers in (1, 2)}
    stdout = {}
    for workers, process in runs.items():  # both run at once: each spends seconds importing train_gpt (torch)
        stdout[workers], stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
    paths = shard_paths(tmp_path / "w2")

    n_train = len(paths) - 1
    assert n_train >= 3, "the corpus should fill several train shards"
    train_names = [f"mine_train_{i:06d}.bin" for i in range(1, n_train + 1)]
    assert [p.name for p in paths] == ["mine_val_000000.bin"] + train_names
    assert stdout[2].count("wrote ") == len(paths)  # a progress line per shard
    val, train = train_gpt.read_shard(paths[0]), [train_gpt.read_shard(p) for p in paths[1:]]
    assert len(val) == VAL_TOKENS + 1  # the last target too: train_gpt.py --val_tokens=VAL_TOKENS reads them all
    assert train_gpt.load_val_sequences(str(paths[0]), VAL_TOKENS, VAL_TOKENS).shape == (1, VAL_TOKENS + 1)
    assert [len(t) for t in train[:-1]] == [SHARD_TOKENS] * (n_train - 1) and 0 < len(train[-1]) <= SHARD_TOKENS

    stream = np.concatenate([val, *train]).astype(np.int64)
    expected = np.concatenate([[train_gpt.EOT] + gpt2_encoding.encode_ordinary(doc) for doc in docs])
    np.testing.assert_array_equal(stream, expected)  # EOT before every document, nothing else in between
    starts = np.flatnonzero(stream == train_gpt.EOT)
    assert starts[0] == 0 and len(starts) == len(docs)
    assert [gpt2_encoding.decode(doc[1:].tolist()) for doc in np.split(stream, starts[1:])] == docs

    one = shard_paths(tmp_path / "w1")
    assert [p.name for p in one] == [p.name for p in paths]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, paths)), "--workers 1 and 2 differ"


def book(b):
    """Short paragraphs, then (in book 0) a paragraph longer than 64 tokens and a sentence longer than 64."""
    paragraphs = [f"Book {b}, paragraph {i}: " + "the cat sat on the mat. " * (1 + i % 4) for i in range(40)]
    if b == 0:
        paragraphs[10] = " ".join(f"Long paragraph, sentence {k} of it." for k in range(30))
        paragraphs[20] = "A sentence without end" + "".join(f" then {k}" for k in range(100))
    return "\n\n".join(paragraphs)


def test_long_documents_become_shuffled_pieces_that_an_epoch_reads_whole(tmp_path, gpt2_encoding):
    """--max_doc_tokens=64: pieces of at most 64 tokens with their EOT, cut at paragraph ends where a paragraph
    fits, else at sentence ends, else between tokens; together exactly the books' text; shuffled across books by
    the seed; and read straight through (--align_to_doc=false), an epoch reads all but the last step's worth."""
    books = [book(b) for b in range(3)]
    for b, text in enumerate(books):
        (tmp_path / f"book{b}.txt").write_text(text)
    inputs = [tmp_path / f"book{b}.txt" for b in range(3)]
    shards = []
    for i, (seed, workers) in enumerate([(1, 2), (1, 1), (2, 2)]):
        code, stderr = run_script(*inputs, "--name", "b", "--out", tmp_path / f"s{i}", "--val_tokens=0",
                                  "--max_doc_tokens=64", f"--seed={seed}", f"--workers={workers}")
        assert code == 0, stderr
        shards.append(tmp_path / f"s{i}" / "b_train_000001.bin")
    shard = shards[0]
    assert shard.read_bytes() == shards[1].read_bytes() != shards[2].read_bytes()  # the seed orders them
    tokens = np.asarray(train_gpt.read_shard(shard))
    pieces = np.split(tokens, np.flatnonzero(tokens == train_gpt.EOT)[1:])
    assert all(p[0] == train_gpt.EOT and train_gpt.EOT not in p[1:] and len(p) <= 64 for p in pieces)
    texts = [gpt2_encoding.decode(p[1:].tolist()) for p in pieces]
    owner = [next(b for b, text in enumerate(books) if t in text) for t in texts]
    for b, text in enumerate(books):  # each book's pieces, put back in place, are the book
        mine = sorted((text.index(t), t) for t, o in zip(texts, owner) if o == b)
        assert "".join(t for _, t in mine) == text
    assert sum(a != b for a, b in zip(owner, owner[1:])) > len(pieces) / 3  # books interleave
    for t in texts:
        long_paragraph = "Long paragraph" in t or " then " in t
        assert t.endswith("\n\n") or any(text.endswith(t) for text in books) or long_paragraph, t
    assert sum("Long paragraph" in t and t.endswith(". ") for t in texts) >= 3  # sentence ends
    assert sum(" then " in t for t in texts) >= 3  # a sentence of ~200 tokens, cut between tokens
    twin = long_documents(tmp_path, [len(p) for p in pieces])  # the same documents, a position as each token
    read = positions_read_in_first_epoch(train_gpt.TokenStream(twin, 64, 2, align_to_doc=False), 256)
    assert len(read) >= len(tokens) - 257  # all but at most a step's worth at the end
    report = train_gpt.TokenStream(twin, 64, 2, align_to_doc=False).first_shard_report(256, run_tokens=256)
    assert report[0].startswith(f"train data: an epoch reads {len(read):,} of the {len(tokens):,} tokens")
    assert len(train_gpt.TokenStream(twin, 64, 2).first_shard_report(256, 256)) == 2  # aligned: no warning either


@pytest.mark.parametrize("val_tokens", [0, 7, 10])
def test_write_shards_sizes_and_order(tmp_path, val_tokens):
    docs = [np.arange(start, start + n, dtype=np.uint16) for start, n in [(1, 3), (100, 12), (200, 1), (300, 14)]]
    load_script().write_shards(iter(docs), tmp_path, "syn", 10, val_tokens)  # 30 tokens: the last shard full or not
    paths = shard_paths(tmp_path, "syn")
    names = ["syn_val_000000.bin"] if val_tokens else []
    names += [f"syn_train_{i:06d}.bin" for i in range(1, len(paths) + 1 - len(names))]
    assert [p.name for p in paths] == names
    shards = [np.asarray(train_gpt.read_shard(p)) for p in paths]
    val = val_tokens + 1 if val_tokens else 0  # val_tokens and the last target
    n_full, rest = divmod(30 - val, 10)
    assert [len(s) for s in shards] == [val] * bool(val_tokens) + [10] * n_full + [rest] * bool(rest)
    np.testing.assert_array_equal(np.concatenate(shards), np.concatenate(docs))


@pytest.mark.parametrize("line, message", [
    ('{"txt": "no text field"}', '"text" string field'),
    ('{"text": 42}', '"text" string field'),
    ('["text"]', '"text" string field'),
    ('{"text": "unterminated', "invalid JSON"),
])
def test_bad_jsonl_line_is_a_one_line_error(tmp_path, gpt2_encoding, line, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n' + line + '\n{"text": "also fine"}\n', encoding="utf-8")
    returncode, stderr = run_script(bad, "--name", "bad", "--out", tmp_path / "out", "--workers", 2)
    assert returncode != 0
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert f"{bad}:3:" in stderr and message in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]  # no shard, no half-written folder
    bad.write_text('{"text": "fine"}\n{"text": "also fine"}\n', encoding="utf-8")  # fixed: a rerun works
    returncode, stderr = run_script(bad, "--name", "bad", "--out", tmp_path / "out", "--val_tokens", 3)
    assert returncode == 0 and [p.name for p in shard_paths(tmp_path / "out", "bad")] == [
        "bad_val_000000.bin", "bad_train_000001.bin"], stderr


def test_unsupported_extension_and_missing_input_are_errors(tmp_path, gpt2_encoding):
    (tmp_path / "notes.csv").write_text("a,b\n")
    for path, message in [(tmp_path / "notes.csv", "unsupported file type '.csv'"),
                          (tmp_path / "missing.txt", "no such file")]:
        returncode, stderr = run_script(path, "--name", "x", "--out", tmp_path / "out")
        assert returncode != 0 and "Traceback" not in stderr
        assert str(path) in stderr and message in stderr
    (tmp_path / "a.txt").write_text("text")
    for bad in ("-5", "1"):
        returncode, stderr = run_script(tmp_path / "a.txt", "--name", "x", "--out", tmp_path / "out",
                                        f"--max_doc_tokens={bad}")
        assert returncode == 2 and stderr.strip().splitlines()[-1].endswith(
            f"--max_doc_tokens={bad}: must be 0 (off) or at least 2 (EOT and a token)")
    assert not (tmp_path / "out").exists()  # nothing written


def test_refuses_to_mix_with_old_shards(tmp_path):
    (tmp_path / "a.txt").write_text("text")
    (tmp_path / "out").mkdir()
    train_gpt.write_shard(tmp_path / "out" / "mine_train_000003.bin", [1, 2, 3])
    returncode, stderr = run_script(tmp_path / "a.txt", "--name", "mine", "--out", tmp_path / "out")
    assert returncode != 0 and "already holds mine shards" in stderr
