"""Shards, the training token stream and the val set (train_gpt.py's Data section)."""
import numpy as np
import pytest

import train_gpt as tg
from conftest import long_documents, positions_read_in_first_epoch


def make_shards(tmp_path, sizes, seed=0, doc_len=50):
    """Shards of random tokens with an EOT every ~doc_len tokens; -> glob pattern."""
    rng = np.random.default_rng(seed)
    for i, n in enumerate(sizes):
        tokens = rng.integers(0, tg.EOT, n)
        tokens[rng.random(n) < 1 / doc_len] = tg.EOT
        tg.write_shard(tmp_path / f"t_train_{i:06d}.bin", tokens)
    return str(tmp_path / "t_train_*.bin")


def test_shard_round_trip_and_no_temp_file(tmp_path):
    tokens = np.array([tg.EOT, 0, 1, 65535, 42], dtype=np.int64)
    tg.write_shard(tmp_path / "a.bin", tokens)
    assert np.array_equal(tg.read_shard(tmp_path / "a.bin"), tokens)
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
    header = np.fromfile(tmp_path / "a.bin", dtype=np.int32, count=256)
    assert list(header[:3]) == [20240520, 1, 5] and not header[3:].any()


def test_write_shard_rejects_tokens_outside_uint16(tmp_path):
    with pytest.raises(tg.ShardError, match="uint16"):
        tg.write_shard(tmp_path / "a.bin", [1, 70000])
    assert not list(tmp_path.iterdir())


def corrupt(path, kind):
    data = bytearray(path.read_bytes())
    if kind == "magic":
        data[0:4] = np.int32(12345).tobytes()
    elif kind == "version":
        data[4:8] = np.int32(2).tobytes()
    elif kind == "shorter":
        data = data[:-2]
    elif kind == "longer":
        data += b"\x00\x00"
    elif kind == "odd":
        data += b"\x00"
    elif kind == "no_header":
        data = data[:100]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind,message", [("magic", "magic number 12345"), ("version", "version 2"),
                                          ("shorter", "header says 10 tokens but the file holds 9"),
                                          ("longer", "header says 10 tokens but the file holds 11"),
                                          ("odd", "holds 10.5"), ("no_header", "shorter than the 1024-byte")])
def test_every_bad_shard_names_the_file(tmp_path, kind, message):
    path = tmp_path / "bad_shard.bin"
    tg.write_shard(path, np.arange(10))
    corrupt(path, kind)
    with pytest.raises(tg.ShardError) as err:
        tg.read_shard(path)
    assert str(path) in str(err.value) and message in str(err.value)


def stream_tokens(stream, steps, tokens_per_step):
    """Input tokens of `steps` steps as one flat array, in stream order."""
    return np.concatenate([stream.next_step(tokens_per_step)[..., :-1].ravel() for _ in range(steps)])


@pytest.mark.parametrize("align", [False, True])
def test_two_ranks_are_disjoint_and_make_the_one_rank_stream(proxy_dir, align):
    pattern = str(proxy_dir / "wiki_train_*.bin")
    kw = dict(seq_len=512, micro_batch_seqs=2, seed=3, align_to_doc=align)
    single = tg.TokenStream(pattern, **kw)
    ranks = [tg.TokenStream(pattern, rank=r, world_size=2, **kw) for r in range(2)]
    for _ in range(3):
        whole = single.next_step(4096)  # accumulation 4 on one process, 2 on each of two
        parts = [s.next_step(4096) for s in ranks]
        assert whole.shape == (4, 2, 513) and parts[0].shape == (2, 2, 513)
        assert np.array_equal(np.concatenate(parts), whole)  # rank 0 then rank 1 = the 1-rank step
    # disjoint positions: no two sequences of a step start at the same place
    starts = [tuple(seq[:8]) for seq in whole.reshape(-1, 513)]
    assert len(set(starts)) == len(starts)
    if align:
        assert (whole[..., 0] == tg.EOT).all()


def test_rank_slices_are_contiguous_tokens_of_the_stream(tmp_path):
    pattern = make_shards(tmp_path, [5000])
    tokens = np.asarray(tg.read_shard(tmp_path / "t_train_000000.bin"))
    rank1 = tg.TokenStream(pattern, 64, 1, rank=1, world_size=2).next_step(256)  # 2 sequences per rank
    assert np.array_equal(rank1[0, 0], tokens[128:128 + 65]) and np.array_equal(rank1[1, 0], tokens[192:192 + 65])


def test_same_seed_same_batches_other_seed_other_order_after_the_first_epoch(tmp_path):
    # a step starts in the next shard when fewer than its 256 (+1) tokens are left (record 2025-08-23): 3 steps of
    # 4 sequences of 64 (+1) tokens per 1000-token shard, 4608 tokens an epoch
    pattern = make_shards(tmp_path, [1000] * 6)
    first = [stream_tokens(tg.TokenStream(pattern, 64, 2, seed=7), 40, 256) for _ in range(2)]
    assert np.array_equal(*first)
    other = stream_tokens(tg.TokenStream(pattern, 64, 2, seed=8), 40, 256)
    epoch = 6 * 12 * 64
    assert np.array_equal(first[0][:epoch], other[:epoch])  # epoch 0: sorted shards, as the records read them
    assert not np.array_equal(first[0][epoch:], other[epoch:])
    shards = [np.asarray(tg.read_shard(tmp_path / f"t_train_{i:06d}.bin")) for i in range(6)]
    assert np.array_equal(first[0][:3 * 256], shards[0][:3 * 256])


def test_restored_position_continues_with_the_same_batches(tmp_path):
    pattern = make_shards(tmp_path, [1000, 700, 900])  # steps cross shard and epoch boundaries
    for align in (False, True):
        straight = tg.TokenStream(pattern, 64, 2, seed=1, align_to_doc=align)
        stream_tokens(straight, 4, 256)
        state = straight.state_dict()
        expected = stream_tokens(straight, 12, 256)
        resumed = tg.TokenStream(pattern, 64, 2, seed=1, align_to_doc=align)
        resumed.load_state_dict(state)
        assert np.array_equal(stream_tokens(resumed, 12, 256), expected)
        assert straight.epoch >= 1  # the test really crossed into a new epoch


def test_aligned_sequences_start_at_documents(tmp_path):
    pattern = make_shards(tmp_path, [4000], doc_len=30)
    batch = tg.TokenStream(pattern, 32, 4, align_to_doc=True).next_step(256)
    assert (batch[..., 0] == tg.EOT).all()


def test_non_integer_accumulation_names_the_numbers(tmp_path):
    stream = tg.TokenStream(make_shards(tmp_path, [3000]), 64, 3, world_size=2)
    with pytest.raises(tg.ConfigError, match=r"tokens_per_step=1000 .* world_size=2 .* micro-batch tokens=192"):
        stream.next_step(1000)


def test_missing_shards_error_names_the_pattern(tmp_path):
    with pytest.raises(tg.ShardError, match="nothing_here_"):
        tg.TokenStream(str(tmp_path / "nothing_here_*.bin"), 64, 1)


def test_val_sequences_are_fixed_and_cover_the_first_tokens(tmp_path):
    make_shards(tmp_path, [300, 300])
    seqs = tg.load_val_sequences(str(tmp_path / "t_train_*.bin"), 500, 100)
    both = np.concatenate([tg.read_shard(tmp_path / f"t_train_{i:06d}.bin") for i in range(2)])
    assert seqs.shape == (5, 101)
    assert np.array_equal(seqs[:, :-1].ravel(), both[:500]) and np.array_equal(seqs[:, 1:].ravel(), both[1:501])
    with pytest.raises(tg.ShardError, match="fewer than val_tokens=700"):
        tg.load_val_sequences(str(tmp_path / "t_train_*.bin"), 700, 100)


def test_a_shard_without_document_starts_is_read_straight(tmp_path):
    """One long document (a book cut into train shards after its EOT) has nowhere to align to."""
    rng = np.random.default_rng(0)
    tg.write_shard(tmp_path / "book_train_000001.bin", rng.integers(0, tg.EOT, 3000))
    batch = tg.TokenStream(str(tmp_path / "book_train_*.bin"), 64, 2, align_to_doc=True).next_step(256)
    tokens = np.asarray(tg.read_shard(tmp_path / "book_train_000001.bin"))
    assert np.array_equal(batch.reshape(-1, 65)[:, :-1].ravel(), tokens[:256])


@pytest.mark.parametrize("align, max_doc_len", [(True, 0), (False, 0), (True, 20)])
def test_the_start_up_report_gives_what_an_epoch_reads(tmp_path, align, max_doc_len):
    """Aligned, a sequence reads 65 tokens from a document start and the rest of a longer document is skipped;
    packed (max_doc_len=20), a sequence reads the first 20 tokens of each of 3 documents and 5 of a fourth;
    straight through, all but the shard's last step's worth is read. The report's count is the walk's."""
    pattern = long_documents(tmp_path)
    stream = lambda: tg.TokenStream(pattern, 64, 2, align_to_doc=align, max_doc_len=max_doc_len)
    lines = stream().first_shard_report(256, run_tokens=256 * 100)
    read = positions_read_in_first_epoch(stream(), 256)
    assert len(read) == {(True, 0): 8 * 65, (True, 20): 2 * 65}.get((align, max_doc_len), len(read))
    assert lines[0].startswith(f"train data: an epoch reads {len(read):,} of the 14,370 tokens of {pattern[:-5]}")
    assert f"about {256 * 100 / len(read):.2f} epochs of the 14,370 in 1 shard(s)" in lines[0]
    cut = f"max_doc_len={max_doc_len}" if max_doc_len else "seq_len=64"
    assert lines[1].endswith("8 documents in " + pattern.replace("*", "000001") + ", median 1,850 tokens,"
                             f" 90th percentile 3,330, 8 longer than {cut}")
    if align:
        assert len(read) < 14370 / 2 and lines[2].startswith(f"warning: an epoch skips {1 - len(read) / 14370:.1%}")
        assert (f"use --align_to_doc=false{' --max_doc_len=0' * bool(max_doc_len)}, best after re-tokenizing with"
                f" data/tokenize_shards.py --max_doc_tokens={max_doc_len or 64}") in lines[2]
    else:
        assert len(read) > 0.95 * 14370 and len(lines) == 2  # no warning


@pytest.mark.parametrize("preset", ["2025-08-23", "record"])
def test_the_records_sequences_on_long_documents(proxy_dir, preset):
    """Sequences of 48K tokens from document starts read all of the proxy's Wikipedia text, no warning; the
    record's documents cut at 896 tokens (2026-07-17's first stage; 2048 after it, and in 2025-12-31's) drop most of
    its long articles, and the start-up says how to keep them."""
    args = tg.parse_args([f"--preset={preset}"])
    stream = tg.TokenStream(str(proxy_dir / "wiki_train_*.bin"), tg.seq_len_at(0, args), 1, align_to_doc=True,
                            max_doc_len=args.max_doc_len)
    lines = stream.first_shard_report(tg.tokens_per_step_at(0, args), run_tokens=1695 * args.tokens_per_step)
    if args.max_doc_len:
        assert len(lines) == 3 and f"data/tokenize_shards.py --max_doc_tokens={args.max_doc_len}" in lines[2], lines
    else:
        assert len(lines) == 2 and "0 longer than seq_len" in lines[1], lines
