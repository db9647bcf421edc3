"""Tokenize your own text into token shards that train_gpt.py reads (FineWeb's shard format).

    python data/tokenize_shards.py corpus/ more.jsonl --name mytext    # -> data/mytext/mytext_*.bin
    python train_gpt.py --train_files='data/mytext/mytext_train_*.bin' --val_files='data/mytext/mytext_val_*.bin'

INPUT: files or directories (a directory means every *.txt and *.jsonl under it, sorted by path).
A .txt file is one document; a .jsonl file holds one document per line as {"text": "..."} (blank
lines skipped). Text is encoded with tiktoken's gpt2 encoding (encode_ordinary, so a literal
"<|endoftext|>" in the text stays plain text) and every document is preceded by EOT 50256.

Output, in --out (default data/NAME/ next to this script), written all at once at the end (a failed run
leaves nothing behind, so a rerun after a fix just works):
    NAME_val_000000.bin     the first --val_tokens + 1 tokens of the stream: train_gpt.py's --val_tokens=N
                            needs the +1 as the last target (a document may be split at the boundary, as in
                            FineWeb's val shard); none with --val_tokens=0
    NAME_train_000001.bin   the rest, --shard_tokens tokens per shard, the last one partial
    NAME_train_000002.bin ...
--val_tokens defaults to 10,485,760, the number of val tokens train_gpt.py evaluates by default; for a
small corpus lower it, and train_gpt.py's --val_tokens with it. --workers processes tokenize documents
in order, so the shards are the same for any worker count; memory holds one shard, not the corpus.

Long documents (books, code, papers): --max_doc_tokens=N cuts every document longer than N tokens (its EOT
included) into pieces of at most N, at paragraph ends (a blank line), else at sentence ends, else between
tokens; each piece starts with EOT, so it is a document of its own to train_gpt.py's masks and loader. The
pieces are then shuffled across documents (--seed), a shard's worth at a time, so that reading straight
through (--align_to_doc=false) mixes documents instead of feeding one book for hundreds of steps. Without
it, an aligned run (the default) reads only the first seq_len tokens of each document: its start-up report
says how much of the shard an epoch reads.
"""
import argparse
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tiktoken

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for train_gpt


class InputError(ValueError):
    """Bad input: main() prints it as one line, without a traceback."""


def iter_files(inputs):
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
            if not files:
                raise InputError(f"{path}: directory holds no .txt or .jsonl files")
            yield from files
        elif not path.is_file():
            raise InputError(f"{path}: no such file or directory")
        elif path.suffix not in (".txt", ".jsonl"):
            raise InputError(f"{path}: unsupported file type {path.suffix!r} (expected .txt or .jsonl)")
        else:
            yield path


def iter_documents(inputs):
    """Yield (where, raw bytes, is_json) one document at a time; decoding and JSON parsing run in the workers."""
    for path in iter_files(inputs):
        if path.suffix == ".txt":
            yield str(path), path.read_bytes(), False
            continue
        with open(path, "rb") as f:  # binary: lines end at b"\n" only, so line numbers are exact
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield f"{path}:{lineno}", line, True


def init_worker(max_doc_tokens=0):
    global encoding, piece_tokens
    encoding, piece_tokens = tiktoken.get_encoding("gpt2"), max_doc_tokens


def split(text, limit):
    """Token lists of at most `limit` tokens that together are the text: whole paragraphs packed while they fit,
    a longer paragraph by its sentences, a longer sentence cut between tokens. Each part is tokenized on its
    own, so a token may differ from the whole text's where two parts meet."""
    pieces, current = [], []
    split_at_blank_lines = re.split(r"(\n[ \t\r]*\n\s*)", text)  # paragraph, blank lines, paragraph, ...
    for paragraph in map("".join, zip(split_at_blank_lines[::2], split_at_blank_lines[1::2] + [""])):
        tokens = encoding.encode_ordinary(paragraph)
        parts = ([tokens] if len(tokens) <= limit else
                 [encoding.encode_ordinary(sentence) for sentence in re.split(r"(?<=[.!?]\s)(?=\S)", paragraph)])
        for part in parts:
            for cut in range(0, max(len(part), 1), limit):  # a sentence longer than limit: between tokens
                chunk = part[cut:cut + limit]
                if len(current) + len(chunk) > limit:
                    pieces.append(current)
                    current = []
                current += chunk
    return pieces + [current]


def tokenize(document):
    """EOT + the document's tokens as uint16 (GPT-2's 50,257 ids fit); with --max_doc_tokens, a list of such
    pieces of at most max_doc_tokens tokens each."""
    where, raw, is_json = document
    try:
        text = raw.decode("utf-8-sig")  # -sig: drop a leading byte-order mark, which is not text
    except UnicodeDecodeError as e:
        raise InputError(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if is_json:
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise InputError(f'{where}: expected a JSON object with a "text" string field')
    if piece_tokens:
        return [np.array([encoding.eot_token] + piece, dtype=np.uint16) for piece in split(text, piece_tokens - 1)]
    return np.array([encoding.eot_token] + encoding.encode_ordinary(text), dtype=np.uint16)


def shuffled(pieces, pool_tokens, seed):
    """The pieces in an order shuffled with the seed, pool_tokens tokens at a time (memory holds one pool)."""
    rng, pool, size = np.random.default_rng(seed), [], 0
    for piece in pieces:
        pool.append(piece)
        size += piece.size
        if size >= pool_tokens:
            yield from (pool[i] for i in rng.permutation(len(pool)))
            pool, size = [], 0
    yield from (pool[i] for i in rng.permutation(len(pool)))


def write_shards(token_arrays, out_dir, name, shard_tokens, val_tokens):
    """Pack a stream of token arrays into shards: val first (index 0), then train shards from index 1."""
    index = 0 if val_tokens else 1
    buffer, filled = np.empty(val_tokens + 1 if val_tokens else shard_tokens, dtype=np.uint16), 0
    n_docs, n_tokens, start = 0, 0, time.time()

    def flush():
        from train_gpt import write_shard  # here, not at the top: it imports torch (seconds); bad input fails fast
        path = Path(out_dir) / f"{name}_{'val' if index == 0 else 'train'}_{index:06d}.bin"
        write_shard(path, buffer[:filled])
        print(f"wrote {path.name} ({filled:,} tokens; {n_docs:,} documents so far, {time.time() - start:.1f}s)",
              flush=True)

    for tokens in token_arrays:
        n_docs, n_tokens = n_docs + 1, n_tokens + tokens.size
        while tokens.size:  # a document may run across shard boundaries
            take = min(tokens.size, buffer.size - filled)
            buffer[filled:filled + take], filled, tokens = tokens[:take], filled + take, tokens[take:]
            if filled == buffer.size:
                flush()
                index, buffer, filled = index + 1, np.empty(shard_tokens, dtype=np.uint16), 0
    if n_docs == 0:
        raise InputError("the inputs hold no documents")
    if filled:
        flush()
    if n_tokens <= val_tokens:
        print(f"warning: only {n_tokens:,} tokens in all, not more than --val_tokens={val_tokens:,}: no train shards")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help=".txt/.jsonl files or directories of them")
    parser.add_argument("--name", required=True, help="shard file prefix, e.g. mytext -> mytext_train_000001.bin")
    parser.add_argument("--out", help="output directory (default: data/NAME/ next to this script)")
    parser.add_argument("--shard_tokens", type=int, default=100_000_000, help="tokens per train shard")
    parser.add_argument("--val_tokens", type=int, default=10_485_760, help="tokens in the val shard (0: none)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="tokenizer processes")
    parser.add_argument("--max_doc_tokens", type=int, default=0,
                        help="split longer documents into pieces of at most this many tokens, shuffled (0: off)")
    parser.add_argument("--seed", type=int, default=0, help="the order of the shuffled pieces (--max_doc_tokens)")
    args = parser.parse_args()
    if args.shard_tokens <= 0 or args.val_tokens < 0 or args.workers <= 0:
        parser.error("--shard_tokens and --workers must be positive, --val_tokens non-negative")
    if args.max_doc_tokens < 0 or args.max_doc_tokens == 1:
        parser.error(f"--max_doc_tokens={args.max_doc_tokens}: must be 0 (off) or at least 2 (EOT and a token)")
    out_dir = Path(args.out) if args.out else Path(__file__).resolve().parent / args.name
    stale = sorted(out_dir.glob(f"{args.name}_val_*.bin")) + sorted(out_dir.glob(f"{args.name}_train_*.bin"))
    if stale:  # old shards beside new ones would be read as training data too
        sys.exit(f"error: {out_dir} already holds {args.name} shards ({stale[0].name}, ...); delete them first")
    try:  # load it here first: a pool worker whose initializer fails is restarted forever, a silent hang
        tiktoken.get_encoding("gpt2")
    except Exception as e:
        sys.exit(f"error: cannot load tiktoken's gpt2 encoding (offline? set TIKTOKEN_CACHE_DIR): {e}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{args.name}-", dir=out_dir.parent))  # shards go here until all are done
    try:
        with multiprocessing.Pool(args.workers, initializer=init_worker, initargs=(args.max_doc_tokens,)) as pool:
            token_arrays = pool.imap(tokenize, iter_documents(args.inputs), chunksize=16)  # in input order
            if args.max_doc_tokens:
                pieces = (piece for pieces in token_arrays for piece in pieces)
                token_arrays = shuffled(pieces, args.shard_tokens, args.seed)
            write_shards(token_arrays, work, args.name, args.shard_tokens, args.val_tokens)
        out_dir.mkdir(exist_ok=True)
        for shard in sorted(work.iterdir()):
            shard.rename(out_dir / shard.name)
        print(f"shards in {out_dir}")
    except InputError as e:
        sys.exit(f"error: {e}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
