"""End-to-end runs of train_gpt.py: the smoke run, resume, 1 vs 2 processes, sampling, compare.py, errors."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import train_gpt as tg
from conftest import ROOT, TINY, long_documents, run, step_lines


@pytest.fixture(scope="session")  # not module: under pytest-xdist a worker may run another module's tests between
def smoke(proxy_dir, tmp_path_factory):
    """Issue 5's smoke run: the cpu preset for 60 steps on real text. -> (cwd, log path)."""
    cwd = tmp_path_factory.mktemp("smoke")
    run(cwd, "--preset=cpu", f"--train_files={proxy_dir}/wiki_train_*.bin", f"--val_files={proxy_dir}/wiki_val_*.bin",
        "--num_iterations=60", "--run_id=smoke")
    return cwd, cwd / "logs" / "smoke.txt"


def test_smoke_run_learns_and_logs_everything(smoke):
    cwd, log = smoke
    val = step_lines(log, "val")
    assert val[0] - val[60] >= 3.0, val
    text = log.read_text()
    for header in ("run_id: smoke", "command: train_gpt.py --preset=cpu", "world_size: 1", "versions: python",
                   'hyperparameters: {"train_files"', "parameters: {", "==== source of train_gpt.py ===="):
        assert header in text
    assert (ROOT / "train_gpt.py").read_text() in text  # the full source, verbatim
    assert re.search(r"^step:60/60 train_loss:\S+ train_time:\d+ms step_avg:\S+ms tokens:61440 epoch:1 tok/s:\d+"
                     r" mfu:n/a eta:0m00s$", text, re.M)
    assert re.search(r"^step:60/60 val_loss:\S+ val_bpb:\S+ train_time:\d+ms", text, re.M)
    assert re.search(r"peak memory allocated: \d+ MiB reserved: \d+ MiB\n"
                     r"done: log logs/smoke.txt, checkpoint logs/smoke/final.pt\n$", text)
    assert sorted(p.name for p in (cwd / "logs" / "smoke").iterdir()) == ["final.pt"]  # no temp file left


def test_long_documents_report_their_skipped_tokens_and_each_epoch(tmp_path):
    """A corpus of a few long documents, aligned: the start-up report and its warning in the log, a line at each
    epoch boundary at the step whose batch starts it, the epoch in the train lines, and compare.py's column."""
    import compare
    pattern = long_documents(tmp_path)
    tg.write_shard(tmp_path / "val.bin", np.arange(2000))
    run(tmp_path, *TINY, f"--train_files={pattern}", f"--val_files={tmp_path}/val.bin", "--val_tokens=1024",
        "--num_iterations=12", "--val_loss_every=0", "--run_id=long", "--save_checkpoint=false")
    text = (tmp_path / "logs/long.txt").read_text()
    stream, expected = tg.TokenStream(pattern, 128, 2, align_to_doc=True), []  # TINY: 4 x 128 tokens a step
    report = stream.first_shard_report(512, run_tokens=12 * 512)
    for step in range(12):
        epoch = stream.epoch
        stream.next_step(512)
        if stream.epoch != epoch:
            expected.append(f"epoch {stream.epoch + 1} begins at step {step + 1}, after {512 * step} tokens")
    assert len(expected) >= 3 and len(report) == 3 and all(f"\n{line}\n" in text for line in report)
    assert re.findall(r"^epoch \d+ begins at step \d+, after \d+ tokens", text, re.M) == expected
    assert re.search(rf"^step:12/12 train_loss:.* epoch:{stream.epoch + 1} ", text, re.M)
    header, rule, row = compare.table([compare.parse_log(tmp_path / "logs/long.txt")]).splitlines()
    assert row.split()[header.split().index("epoch")] == str(stream.epoch + 1)


def test_sampling_from_the_smoke_checkpoint(smoke, gpt2_encoding):
    cwd, _ = smoke
    result = run(cwd, "--sample=logs/smoke/final.pt", "--prompt=The city of", "--max_new_tokens=12", "--seed=3")
    text = result.stdout[result.stdout.index("The city of"):]  # the sample may run over several lines
    assert len(gpt2_encoding.encode(text)) > 4


def test_compare_reads_two_real_logs(smoke, synthetic_data, tmp_path):
    _, smoke_log = smoke
    data_dir, data_args = synthetic_data
    run(tmp_path, *TINY, *data_args, "--num_iterations=10", "--val_loss_every=5", "--run_id=other")
    out = tmp_path / "curves.png"
    result = subprocess.run([sys.executable, str(ROOT / "compare.py"), str(smoke_log), str(tmp_path / "logs/other.txt"),
                             "--plot", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "smoke" in result.stdout and "other" in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import compare
    figure = compare.build_figure([compare.parse_log(smoke_log), compare.parse_log(tmp_path / "logs/other.txt")])
    for axes in figure.axes:
        assert len([line for line in axes.get_lines() if line.get_gid() != "target"]) == 2


def test_resumed_run_logs_the_same_losses_bit_for_bit(synthetic_data, tmp_path):
    _, data_args = synthetic_data
    common = [*TINY, *data_args, "--num_iterations=40", "--val_loss_every=10", "--train_log_every=1"]
    run(tmp_path, *common, "--run_id=straight", "--checkpoint_every=20")
    run(tmp_path, *common, "--run_id=resumed", "--resume=logs/straight/step_000020.pt")
    straight, resumed = tmp_path / "logs/straight.txt", tmp_path / "logs/resumed.txt"
    for kind in ("train", "val"):
        a, b = step_lines(straight, kind), step_lines(resumed, kind)
        assert min(b) in (20, 21) and max(b) == 40
        assert {s: a[s] for s in b} == b
    final = [torch.load(tmp_path / f"logs/{run_id}/final.pt", weights_only=False)["model"]
             for run_id in ("straight", "resumed")]
    assert all(torch.equal(final[0][name], final[1][name]) for name in final[0])
    assert "resumed from logs/straight/step_000020.pt at step 20" in resumed.read_text()


def test_two_processes_match_one_process_with_accumulation(synthetic_data, tmp_path):
    _, data_args = synthetic_data
    common = [*TINY, *data_args, "--num_iterations=6", "--val_loss_every=3", "--tokens_per_step=512"]
    run(tmp_path, *common, "--run_id=one")  # 2 micro-batches of 256 tokens accumulated
    run(tmp_path, *common, "--run_id=two", nproc=2)  # 1 micro-batch on each rank
    one, two = (torch.load(tmp_path / f"logs/{r}/final.pt", weights_only=False)["model"] for r in ("one", "two"))
    assert [k for k in one if not torch.equal(one[k], two[k])] == []  # g0 + g1 either way: bit for bit
    for kind in ("train", "val"):
        assert step_lines(tmp_path / "logs/one.txt", kind) == step_lines(tmp_path / "logs/two.txt", kind)
    assert "world_size: 2" in (tmp_path / "logs/two.txt").read_text()


# 3 layers: every Muon shape group holds 3 matrices, more than 2 ranks and not a multiple; 512-token sequences
# are 4 attention blocks with windows of 2 and 4 blocks; value, bigram and smear inputs on; Wikipedia documents
# run across sequence boundaries. One 512-token micro-batch per rank and step.
WORLD_ARGS = ["--preset=cpu", "--num_layers=3", "--model_dim=64", "--num_heads=2", "--head_dim=32", "--seq_len=512",
              "--micro_batch_seqs=1", "--window_pattern=SL", "--window_blocks_start=2", "--window_blocks_end=4",
              "--value_embeds=1", "--bigram_embed=1", "--smear_gate=true", "--num_iterations=8", "--val_loss_every=4",
              "--val_tokens=4096", "--val_seq_len=512", "--train_log_every=1"]


@pytest.mark.parametrize("nproc", [2, 3])
def test_n_processes_log_the_losses_of_one_process_on_real_text(proxy_dir, tmp_path, nproc):
    """The same hyperparameters give the same run for 1 and N processes, whatever OMP_NUM_THREADS says (the
    single process gets 2 here, torchrun's workers 1). With 2 ranks the gradient is g0 + g1 either way, so every
    logged loss and every weight is equal bit for bit. gloo's ring all-reduce adds 3 ranks' gradients in a
    rotated order per chunk, which differs from g0 + g1 + g2 in the last bit; early training amplifies that
    to ~1e-4 of the loss by step 8 (as a different thread count would), so 3 ranks are held to 1e-4 up to step 3,
    the first step whose loss sees a Muon update (the zero-initialised head keeps the trunk's gradient 0 in step 1)."""
    data = [f"--train_files={proxy_dir}/wiki_train_*.bin", f"--val_files={proxy_dir}/wiki_val_*.bin",
            f"--tokens_per_step={512 * nproc}"]
    run(tmp_path, *WORLD_ARGS, *data, "--run_id=one", env=dict(os.environ, OMP_NUM_THREADS="2"))
    torchrun_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torchrun sets 1 per worker
    run(tmp_path, *WORLD_ARGS, *data, "--run_id=many", nproc=nproc, env=torchrun_env)
    one, many = ({(step, kind): loss for kind in ("train", "val") for step, loss in step_lines(log, kind).items()}
                 for log in (tmp_path / "logs/one.txt", tmp_path / "logs/many.txt"))
    assert len(one) == 8 + 3 and one.keys() == many.keys()
    if nproc == 2:
        assert one == many
        weights = [torch.load(tmp_path / f"logs/{r}/final.pt", weights_only=False)["model"] for r in ("one", "many")]
        assert [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])] == []
    else:
        early = [key for key in one if key[0] <= 3]
        assert max(abs(one[key] / many[key] - 1) for key in early) < 1e-4, (one, many)


# --preset=2025-12-31 at a CPU size, its schedules over 12 steps (the last 2 its extension): 2 sequences a step of
# 512, then 1024 (step 4), then 1536 tokens (step 7), windows 3 -> 7 -> 11 -> 13 blocks with YaRN, Adam on odd steps,
# the embedding untied after step 7, the final validation's window 20
PRESET_1231_CPU = ["--preset=2025-12-31", "--model_dim=64", "--num_heads=2", "--head_dim=32", "--num_iterations=12",
                   "--extension_steps=2", "--tokens_per_step=1024", "--batch_schedule=4:2048,7:3072",
                   "--seqs_per_step=2", "--seq_len=1536", "--muon_momentum_warmup_steps=3",
                   "--muon_momentum_cooldown_steps=2", "--val_loss_every=4", "--val_tokens=4096", "--val_seq_len=1024",
                   "--train_log_every=1", "--compile=false", "--warmup_steps=0", "--fp8_head=off",
                   "--checkpoint_every=5"]


# record 2026-07-17's math at that size: its bigram table 32 wide, vocab rows; documents cut at 200, then 400 tokens
PRESET_0717_CPU = ["--preset=2026-07-17", *PRESET_1231_CPU[1:], "--bigram_dim=32", "--bigram_embed=1",
                   "--max_doc_len=200", "--doc_len_schedule=4:400"]


@pytest.mark.parametrize("preset", [PRESET_1231_CPU, PRESET_0717_CPU], ids=["2025-12-31", "2026-07-17"])
def test_the_record_presets_run_the_same_on_1_and_2_processes_and_resume_across_them(proxy_dir, tmp_path, preset):
    """1 and 2 processes log the same losses and end with the same weights, bit for bit (Adam's gradients are
    averaged every step and held, so both add the same terms in the same order); the 2-process checkpoint after
    step 5 (Adam holding step 4's gradients) continues on 1 process with the same losses and weights. (FP8 MLP
    off, as on CPU by default: its activation scale is each rank's last micro-batch's, as in the record.)"""
    data = [f"--train_files={proxy_dir}/wiki_train_*.bin", f"--val_files={proxy_dir}/wiki_val_*.bin"]
    run(tmp_path, *preset, *data, "--run_id=one", env=dict(os.environ, OMP_NUM_THREADS="2"))
    torchrun_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    run(tmp_path, *preset, *data, "--run_id=two", nproc=2, env=torchrun_env)
    run(tmp_path, *preset, *data, "--run_id=resumed", "--resume=logs/two/step_000005.pt")
    logs = {r: {(step, kind): loss for kind in ("train", "val") for step, loss in
                step_lines(tmp_path / f"logs/{r}.txt", kind).items()} for r in ("one", "two", "resumed")}
    assert len(logs["one"]) == 12 + 4 and logs["one"] == logs["two"]
    assert logs["resumed"] == {key: loss for key, loss in logs["one"].items() if key[0] > 5 or key == (5, "val")}
    weights = [torch.load(tmp_path / f"logs/{r}/final.pt", weights_only=False)["model"] for r in logs]
    assert all([k for k in weights[0] if not torch.equal(weights[0][k], w[k])] == [] for w in weights[1:])
    assert "tokens:" in (text := (tmp_path / "logs/one.txt").read_text()) and "world_size: 2" in (
        tmp_path / "logs/two.txt").read_text()
    assert re.search(r"step:12/12 .*tokens:25600\b", text)  # 4 x 1024 + 3 x 2048 + 5 x 3072


def test_non_finite_loss_stops_the_run_naming_the_step(synthetic_data, tmp_path):
    _, data_args = synthetic_data
    result = run(tmp_path, *TINY, *data_args, "--num_iterations=20", "--train_log_every=5", "--scalar_lr=1e30",
                 "--run_id=nan", check=False)  # x0 lambdas ~1e30 compound over the layers: inf, then nan
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"train_gpt\.py: loss is nan \(non-finite\) at step 3; .*", last_line)


def test_a_used_run_id_is_refused_and_its_log_kept(synthetic_data, tmp_path):
    _, data_args = synthetic_data
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/taken.txt").write_text("an earlier run\n")
    result = run(tmp_path, *TINY, *data_args, "--run_id=taken", check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == ("train_gpt.py: logs/taken.txt already exists; choose another --run_id"
                                     " (or continue it with --resume=auto)")
    assert (tmp_path / "logs/taken.txt").read_text() == "an earlier run\n"


def test_a_parameter_without_gradient_stops_the_run_at_start_up(synthetic_data, tmp_path):
    _, data_args = synthetic_data  # value table 0 feeds layers 0 and 3, and neither has attention
    result = run(tmp_path, *TINY, *data_args, "--value_embeds=1", "--no_attn_layers=0,3", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "train_gpt.py: parameters received no gradient: value_embeds.0.weight; nothing in forward() uses them with"
        " these flags")


def test_missing_data_is_one_line_error(tmp_path):
    result = run(tmp_path, *TINY, "--train_files=nowhere/*.bin", check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == ("train_gpt.py: no shard matches 'nowhere/*.bin' (download with "
                                     "`python cached_fineweb10B.py 9` or set --train_files)")


def test_profile_steps_write_the_op_table_and_a_trace(synthetic_data, tmp_path):
    _, data_args = synthetic_data
    run(tmp_path, *TINY, *data_args, "--num_iterations=6", "--profile_steps=2", "--run_id=prof")
    table = (tmp_path / "logs/prof/profile.txt").read_text()
    assert table.startswith("2 steps, prof") and "aten::mm" in table
    assert re.search(r"^\s*ProfilerStep\*\s.*\s2\s*$", table, re.M)  # exactly the two profiled steps
    trace = json.loads((tmp_path / "logs/prof/trace.json").read_text())
    assert any(e.get("name") == "aten::mm" for e in trace["traceEvents"])
    log = (tmp_path / "logs/prof.txt").read_text()
    assert re.search(r"^step:6/6 val_loss:", log, re.M) and "profile: logs/prof/profile.txt" in log  # runs on


def bench_plain_flags():
    text = (ROOT / "bench.sh").read_text()
    return re.search(r"^PLAIN=\((.*?)\)$", text, re.S | re.M)[1].split()


def test_bench_plain_flags_turn_off_every_trick_of_the_docstring():
    args = tg.parse_args(["--preset=record", *bench_plain_flags()])
    tricks = re.findall(r"^    (\w+)  +\S", tg.__doc__, re.M)  # the docstring's list: one flag per trick
    assert len(tricks) == 40 and all(f"--{t}=" in " ".join(bench_plain_flags()) for t in tricks)
    assert (args.rope_fraction, args.qk_norm, args.mlp_act, args.no_attn_layers, args.logit_softcap) == (1, False,
                                                                                                         "gelu", (), 0)
    assert tg.window_blocks(0, args) == tg.window_blocks(200, args) == (8, 4)  # GPT-2's 1024 tokens, fixed
    assert args.window_pattern == "L" and args.attn_scale == pytest.approx(args.head_dim ** -0.5)


def test_bench_script_runs_and_ends_with_the_table(proxy_dir):
    tag = f"test{time.time_ns()}"
    env = dict(os.environ, BENCH_RUNS="cpu", BENCH_TAG=tag,  # bench.sh calls `python3`: this interpreter
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    try:
        result = subprocess.run(["bash", str(ROOT / "bench.sh"), f"--train_files={proxy_dir}/wiki_train_*.bin",
                                 f"--val_files={proxy_dir}/wiki_val_*.bin", "--num_iterations=4",
                                 "--val_loss_every=2", "--val_tokens=8192", "--train_log_every=2"],
                                capture_output=True, text=True, timeout=600, env=env)
    finally:
        (ROOT / f"logs/bench_{tag}_cpu.txt").unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr[-3000:]
    header, rule, row = result.stdout.strip().splitlines()[-3:]
    assert header.split()[:5] == ["run", "steps", "tokens", "epoch", "val_loss"]
    assert row.startswith(f"bench_{tag}_cpu  ") and row.split()[1] == "4/4"
    unknown = subprocess.run(["bash", str(ROOT / "bench.sh")], env=dict(env, BENCH_RUNS="fast"), capture_output=True,
                             text=True)
    assert unknown.returncode == 2 and "unknown run 'fast'" in unknown.stdout


@pytest.fixture(scope="session")  # as smoke
def tiny_checkpoint(synthetic_data, tmp_path_factory):
    """A 4-step run of the tiny model with checkpoints at 2 and 4: -> its folder (cwd) and run_id."""
    _, data_args = synthetic_data
    cwd = tmp_path_factory.mktemp("ckpt")
    run(cwd, *TINY, *data_args, "--num_iterations=4", "--val_loss_every=4", "--checkpoint_every=2",
        "--run_id=tiny")
    return cwd


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("case", ["unwritable logs", "unwritable checkpoint folder"])
def test_unwritable_log_folders_are_one_line_errors_and_write_nothing(synthetic_data, tmp_path, case):
    """Found when the run starts, before anything is written (the errors found while parsing are test_cli's)."""
    _, data_args = synthetic_data
    if case == "unwritable logs":
        (tmp_path / "logs").write_text("a file where the logs folder should be\n")
        expected = "train_gpt.py: cannot write to logs/ "
    else:
        (tmp_path / "logs").mkdir()
        (tmp_path / "logs/x").write_text("a file where the run's checkpoint folder should be\n")
        expected = "train_gpt.py: cannot write to logs/x/ "
    before = files_under(tmp_path)
    result = run(tmp_path, *TINY, *data_args, "--run_id=x", check=False)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(expected), result.stderr
    assert files_under(tmp_path) == before


def test_train_time_counts_every_step_once_with_checkpoints(synthetic_data, tmp_path):
    """Checkpoints and validation stop the clock and it restarts where it stopped. Each save and each validation
    here (the real ones) is followed by a pause_s sleep, so a clock that ran through either would put a step's
    train_time delta above pause_s; a tiny step takes ~0.55 s alone, 3.8 s on 2 cores shared by 8 processes. No
    cross-run timing ratio: that needs the cores to itself."""
    _, data_args = synthetic_data
    pause_s = 4.0
    slowed = ("import sys, time, train_gpt as tg\n"
              f"def slowed(f): return lambda *a: (f(*a), time.sleep({pause_s}))[0]\n"
              "tg.save_checkpoint, tg.log_validation = slowed(tg.save_checkpoint), slowed(tg.log_validation)\n"
              "tg.main(sys.argv[1:])\n")
    argv = [*TINY, *data_args, "--num_iterations=4", "--val_loss_every=2", "--checkpoint_every=3",
            "--train_log_every=1", "--run_id=saving"]
    result = subprocess.run([sys.executable, "-c", slowed, *argv], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "logs/saving.txt").read_text()
    assert sorted(p.name for p in (tmp_path / "logs/saving").iterdir()) == ["final.pt", "step_000003.pt"]
    train = [0.0] + [float(t) for t in re.findall(r"^step:\d+/4 train_loss:\S+ train_time:(\d+)ms", text, re.M)]
    val = [float(t) for t in re.findall(r"^step:\d+/4 val_loss:\S+ val_bpb:\S+ train_time:(\d+)ms", text, re.M)]
    deltas = [b - a for a, b in zip(train, train[1:])]
    assert len(deltas) == 4 and all(0 < d < 1000 * pause_s for d in deltas), deltas  # pauses before steps 1, 3, 4
    # a val line's train_time is its step's, plus the host time from writing the train line to stopping the clock
    # (1-2 ms on loaded cores; a clock that ran through the pause would add 4000)
    assert len(val) == 3 and all(0 <= v - t < 100 for v, t in [(val[1], train[2]), (val[2], train[4])]), (val, train)


def test_tok_s_after_a_resume_is_the_steps_own(synthetic_data, tiny_checkpoint, tmp_path):
    _, data_args = synthetic_data
    shutil.copy(tiny_checkpoint / "logs/tiny/step_000002.pt", tmp_path / "tiny.pt")
    run(tmp_path, *data_args, "--resume=tiny.pt", "--train_log_every=1", "--run_id=again")  # its own settings
    first = re.search(r"^step:3/4 train_loss:\S+ train_time:\S+ step_avg:\S+ tokens:\d+ epoch:1 tok/s:(\d+) mfu:\S+"
                      r" eta:\d+m\d\ds$", (tmp_path / "logs/again.txt").read_text(), re.M)
    straight = re.findall(r"^step:\d/4 train_loss.* tok/s:(\d+)", (tiny_checkpoint / "logs/tiny.txt").read_text(), re.M)
    assert first and 0.2 < int(first[1]) / np.median([int(t) for t in straight]) < 5


def test_damaged_checkpoint_is_refused_by_resume_and_sample(synthetic_data, tiny_checkpoint, tmp_path):
    _, data_args = synthetic_data
    data = bytearray((tiny_checkpoint / "logs/tiny/step_000002.pt").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (tmp_path / "damaged.pt").write_bytes(bytes(data))
    for argv in (["--resume=damaged.pt", *data_args], ["--sample=damaged.pt", "--prompt=Hi"]):
        result = run(tmp_path, *argv, check=False)
        assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("train_gpt.py: ") and "damaged.pt" in result.stderr, result.stderr
    assert not (tmp_path / "logs").exists()


def test_keep_checkpoints_and_export(synthetic_data, tmp_path, gpt2_encoding):
    _, data_args = synthetic_data
    run(tmp_path, *TINY, *data_args, "--num_iterations=5", "--val_loss_every=0", "--checkpoint_every=1",
        "--keep_checkpoints=2", "--run_id=kept")
    assert sorted(p.name for p in (tmp_path / "logs/kept").iterdir()) == ["final.pt", "step_000003.pt",
                                                                         "step_000004.pt"]
    result = run(tmp_path, "--resume=logs/kept/final.pt", "--export=small.pt")
    assert "to small.pt" in result.stdout
    export = torch.load(tmp_path / "small.pt", weights_only=False)
    assert set(export) == {"args", "step", "model", "checksum"} and export["step"] == 5
    assert all(t.dtype == torch.bfloat16 for t in export["model"].values() if t.is_floating_point())
    assert (tmp_path / "small.pt").stat().st_size < 0.6 * (tmp_path / "logs/kept/final.pt").stat().st_size
    sampled = run(tmp_path, "--sample=small.pt", "--prompt=The", "--max_new_tokens=5", "--num_layers=9")
    assert "model fields given here are ignored" in sampled.stderr and "The" in sampled.stdout
