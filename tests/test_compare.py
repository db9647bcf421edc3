"""compare.py: log parsing, the table, the plot and the records leaderboard, on small hand-written logs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import compare

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "compare.py"

# Lines inside the source block that would parse as log lines if the block were not skipped.
DECOY_SOURCE = '''import os
"""Example output:
step:5/60 val_loss:1.0000 val_bpb:0.3000 train_time:5ms step_avg:1.00ms
step:60/60 train_loss:0.5000 train_time:999999ms step_avg:1.00ms tokens:1 tok/s:1 mfu:n/a
peak memory allocated: 1 MiB reserved: 2 MiB
run_id: decoy
"""
    print0(f"step:{step}/{args.num_iterations} val_loss:{val_loss:.4f} train_time:{t:.0f}ms")
'''


def write_log(path, run_id, losses, tps=8192, step_ms=100, every=10, mem=1234, extra_hp=None, tokens_field=False,
              mfu=None, compile_s=None):
    """A log as train_gpt.py writes it: header, nvidia-smi, source block, val/train lines, memory line."""
    n = (len(losses) - 1) * every
    hp = {"preset": "cpu", "num_iterations": n, "tokens_per_step": tps, "batch_schedule": "", **(extra_hp or {})}
    lines = [f"run_id: {run_id}", f"command: train_gpt.py --preset=cpu --num_iterations={n} --run_id={run_id}",
             "world_size: 1", "device: cpu (8 cores)", "versions: python 3.11.7 torch 2.13.0 triton n/a cuda n/a",
             "hyperparameters: " + json.dumps(hp), "nvidia-smi: not available",
             "==== source of train_gpt.py ====", *DECOY_SOURCE.splitlines(), "==== end of source ===="]
    if compile_s is not None:
        lines.append(f"warmup: 10 untimed steps (compilation) took {compile_s:.1f}s")
    for i, loss in enumerate(losses):
        step = i * every
        if step:
            tok = f" tokens:{step * tps}" if tokens_field else ""
            lines.append(f"step:{step}/{n} train_loss:{loss + 0.1:.4f} train_time:{step * step_ms}ms "
                         f"step_avg:{step_ms:.2f}ms{tok} tok/s:{tps * 1000 // step_ms} "
                         f"mfu:{f'{mfu + i:.1f}%' if mfu else 'n/a'}")
        lines.append(f"step:{step}/{n} val_loss:{loss:.4f} val_bpb:{loss / 3.3:.4f} train_time:{step * step_ms}ms "
                     f"step_avg:{(step_ms if step else float('nan')):.2f}ms")
        if i == 1:
            lines.append("warning: some free text that is not a log line")
    lines.append(f"peak memory allocated: {mem} MiB reserved: {mem + 100} MiB")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def two_logs(tmp_path):
    a = write_log(tmp_path / "a.txt", "run_a", [10.83, 7.5, 6.1, 5.2, 4.4, 3.9, 3.27])
    b = write_log(tmp_path / "b.txt", "run_b", [10.83, 7.9, 6.5, 5.6, 4.8, 4.1, 3.35], step_ms=80, mem=2048)
    return a, b


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True, text=True)


def test_parse_log_values_and_decoys_ignored(two_logs):
    run = compare.parse_log(two_logs[0])
    assert run["run_id"] == "run_a" and run["world_size"] == 1 and run["device"] == "cpu (8 cores)"
    assert run["hyperparameters"]["tokens_per_step"] == 8192 and run["total_steps"] == 60
    assert [p.step for p in run["val"]] == [0, 10, 20, 30, 40, 50, 60]  # the decoy step:5 is not there
    assert [p.step for p in run["train"]] == [10, 20, 30, 40, 50, 60]
    final = run["val"][-1]
    assert final == (60, 6000.0, 60 * 8192, 3.27, pytest.approx(3.27 / 3.3, abs=1e-4))
    assert run["val"][0].train_time_ms == 0 and run["val"][0].tokens == 0
    assert run["train"][-1].tok_s == 81920 and run["train"][-1].mfu is None
    assert run["peak_mem_allocated"] == 1234 and run["peak_mem_reserved"] == 1334
    s = compare.summarize(run)
    assert (s["val_loss"], s["train_time_s"], s["tokens"], s["peak_mem"]) == (3.27, 6.0, 491520, 1234)
    assert compare.human(s["tokens"]) == "492K" and compare.human(670_000_000) == "0.67B"


def test_table_has_step_avg_mfu_and_compile_time(tmp_path):
    log = write_log(tmp_path / "gpu.txt", "gpu", [10.8, 5.0, 4.0], step_ms=250, mfu=40.0, compile_s=61.25)
    s = compare.summarize(compare.parse_log(log))
    assert (s["step_avg_ms"], s["mfu"], s["compile_s"]) == (250.0, 42.0, 61.2)  # mfu: the last train line's
    row = compare.table([compare.parse_log(log)]).splitlines()[-1].split()
    assert row[3] == "?" and row[7:11] == ["250.0", "32,768", "42.0", "61.2"]  # no epoch: fields (older logs)


def test_tokens_field_preferred_and_batch_schedule(tmp_path):
    # With a batch schedule, step x tokens_per_step is wrong: explicit tokens: fields are used instead,
    # and the val line at the same step takes the train line's count.
    log = write_log(tmp_path / "s.txt", "sched", [10.8, 6.0, 4.0], tps=1000, tokens_field=True,
                    extra_hp={"batch_schedule": "0:500,10:1000"})
    text = log.read_text().replace("tokens:20000", "tokens:15000")
    log.write_text(text)
    run = compare.parse_log(log)
    assert [p.tokens for p in run["val"]] == [0, 10000, 15000]
    no_field = write_log(tmp_path / "t.txt", "sched2", [10.8, 6.0], extra_hp={"batch_schedule": "0:500"})
    assert compare.parse_log(no_field)["val"][-1].tokens is None


def test_old_modded_nanogpt_log(tmp_path):
    log = tmp_path / "old.txt"
    log.write_text("import os\n    print0(f'step:{step}/{n} val_loss:{v:.4f}')\n" + "=" * 100 + "\n"
                   "step:0/100 val_loss:10.8258 train_time:0ms step_avg:nanms\n"
                   "step:1/100 train_time:24891ms step_avg:nanms\n"
                   "step:100/100 val_loss:3.2799 train_time:180000ms step_avg:1800.00ms\n"
                   "peak memory consumption: 22000 MiB\n")
    run = compare.parse_log(log)
    assert run["run_id"] == "old" and run["val"][-1].val_loss == 3.2799 and run["val"][-1].tokens is None
    assert run["val"][-1].val_bpb is None and run["train"][0].train_loss is None
    assert run["peak_mem_allocated"] == 22000 and "?" in compare.table([run])
    fig = compare.build_figure([run])  # no tokens known: the tokens panel is empty, the time panel has the run
    curves = [[l for l in ax.get_lines() if l.get_gid() != "target"] for ax in fig.axes]
    assert len(curves[0]) == 1 and not curves[1]


def test_cli_table_and_plot(two_logs, tmp_path):
    out = tmp_path / "out.png"
    r = run_cli(*two_logs, "--plot", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "run_a" in r.stdout and "run_b" in r.stdout and "3.2700" in r.stdout and "60/60" in r.stdout
    table_lines = [l for l in r.stdout.splitlines() if l.startswith("run")]
    assert len({len(l.rstrip()) for l in r.stdout.splitlines()[:4]}) == 1, r.stdout  # aligned columns
    assert len(table_lines) == 3  # header + two rows
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_figure_has_one_curve_per_run(two_logs):
    fig = compare.build_figure([compare.parse_log(p) for p in two_logs])
    assert len(fig.axes) == 2
    for ax in fig.axes:
        curves = [l for l in ax.get_lines() if l.get_gid() != "target"]
        assert len(curves) == 2
        assert any(l.get_gid() == "target" for l in ax.get_lines())  # 3.28 lies within 3.27..3.35+
    assert fig.axes[0].get_lines()[0].get_xdata()[-1] == 6.0  # seconds
    assert fig.axes[1].get_lines()[0].get_xdata()[-1] == 60 * 8192


def test_a_log_without_step_lines_is_skipped_with_a_note(two_logs, tmp_path):
    """A failed start leaves a header and no step line; compare.py logs/*.txt still shows the others."""
    empty = tmp_path / "empty.txt"
    empty.write_text("run_id: empty\nTraceback (most recent call last):\n")
    r = run_cli(two_logs[0], empty, tmp_path / "nope.txt", "--plot", tmp_path / "p.png", cwd=tmp_path)
    assert r.returncode == 0 and "run_a" in r.stdout and (tmp_path / "p.png").exists()
    notes = r.stderr.strip().splitlines()
    assert len(notes) == 2 and "skipping" in notes[0] and "empty.txt" in notes[0] and "nope.txt" in notes[1]
    r = run_cli(empty, cwd=tmp_path)  # nothing left to show: an error
    assert r.returncode != 0 and "none of the logs has a step line" in r.stderr


def test_groups_of_seeds_get_mean_std_and_the_t_test(tmp_path):
    finals = [3.2774, 3.2782, 3.2796, 3.2815, 3.2760]
    logs = [write_log(tmp_path / f"s{i}.txt", f"seed{i}", [10.83, 4.0, v], every=100, extra_hp={"seed": i})
            for i, v in enumerate(finals)]
    other = write_log(tmp_path / "o.txt", "other", [10.83, 4.0, 3.30], every=100, extra_hp={"muon_lr": 0.06})
    r = run_cli(*logs, other, cwd=tmp_path)
    groups = [line for line in r.stdout.splitlines() if line.startswith("group ")]
    assert len(groups) == 1 and groups[0].startswith("group seed0, seed1, seed2, seed3, seed4: n=5")
    mean, std = compare.statistics.mean(finals), compare.statistics.stdev(finals)
    assert f"val_loss {mean:.4f} ± {std:.4f}" in groups[0]
    # the record's own 14 runs give p=0.0059 with scipy's ttest_1samp(alternative='less') (its README)
    record = [3.2774, 3.2782, 3.2796, 3.2815, 3.276, 3.2777, 3.2784, 3.2795, 3.281, 3.2802, 3.2767, 3.2772, 3.28,
              3.2786]
    assert compare.one_sided_p(record, 3.28) == pytest.approx(0.0059, abs=5e-5)
    assert compare.one_sided_p([3.5, 3.6, 3.4], 3.28) == pytest.approx(0.96876, abs=1e-4)
    assert compare.one_sided_p([3.0], 3.28) is None


def test_an_unfinished_run_is_left_out_of_its_group_and_shows_its_own_time(tmp_path):
    logs = [write_log(tmp_path / f"s{i}.txt", f"seed{i}", [10.83, 4.0, v], every=100, extra_hp={"seed": i})
            for i, v in enumerate([3.2774, 3.2782])]
    killed = tmp_path / "k.txt"  # died after step 150's train line: its last val line is step 100's
    killed.write_text("\n".join(logs[0].read_text().splitlines()[:-3]).replace("run_id: seed0", "run_id: killed")
                      + "\nstep:150/200 train_loss:3.9 train_time:15000ms step_avg:100.00ms tok/s:81920 mfu:n/a\n")
    r = run_cli(*logs, killed, cwd=tmp_path)
    group = [line for line in r.stdout.splitlines() if line.startswith("group ")]
    assert group == [f"group seed0, seed1: n=2 val_loss 3.2778 ± 0.0006 train_time_s 20.0 ± 0.0 p(mean < 3.28)="
                     f"{compare.one_sided_p([3.2774, 3.2782], 3.28):.4f} (one-sided t-test, n=2); left out, "
                     "unfinished: killed"]
    row = next(line.split() for line in r.stdout.splitlines() if line.startswith("killed"))
    assert row[1:3] == ["150/200", "1.2M"] and row[6:8] == ["15.0", "100.0"]  # steps, tokens, time, step_avg


def test_steps_logged_again_after_a_restart_replace_the_first(tmp_path):
    log = write_log(tmp_path / "r.txt", "r", [10.83, 7.5, 6.1, 5.2], every=10)
    lines = log.read_text().splitlines()
    again = [l.replace("6.1000", "6.0000") for l in lines if l.startswith(("step:20/30", "step:30/30"))]
    log.write_text("\n".join(lines[:-1] + ["resumed (auto) from logs/r/step_000010.pt at step 10"] + again) + "\n")
    run = compare.parse_log(log)
    assert [p.step for p in run["val"]] == [0, 10, 20, 30] and run["val"][2].val_loss == 6.0


def test_plot_keeps_step_0_in_view(two_logs):
    figure = compare.build_figure([compare.parse_log(p) for p in two_logs])
    for axes in figure.axes:
        low, high = axes.get_ylim()
        assert low <= 3.27 and high >= 10.83


def test_leaderboard(two_logs, tmp_path):
    records = tmp_path / "records"
    rec = records / "2025-01-15_FasterMuon"
    rec.mkdir(parents=True)
    (rec / "README.md").write_text("# Faster Muon\n")
    (rec / "run_a.txt").write_text(two_logs[0].read_text())
    (records / "README.md").write_text("# Records\n\nrules\n\n<!-- leaderboard -->\nold\n<!-- /leaderboard -->\n"
                                       "\nend\n")
    r = run_cli("--leaderboard", "--records", records, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    row = next(l for l in r.stdout.splitlines() if "2025-01-15_FasterMuon" in l)
    assert "3.2700" in row and "6.0" in row and "2025-01-15" in row and "1× cpu (8 cores)" in row and "yes" in row
    readme = (records / "README.md").read_text()
    assert "old" not in readme and row in readme and readme.endswith("<!-- /leaderboard -->\n\nend\n")
    assert readme.startswith("# Records\n\nrules\n\n<!-- leaderboard -->\n")


def test_leaderboard_empty(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    (records / "README.md").write_text("# Records\n<!-- leaderboard -->\n<!-- /leaderboard -->\n")
    r = run_cli("--leaderboard", "--records", records, cwd=tmp_path)
    assert r.returncode == 0 and "No records yet" in r.stdout
    assert "No records yet" in (records / "README.md").read_text()


def test_target_rule():
    run = lambda ws, dev: {"world_size": ws, "device": dev}
    assert compare.target_for(run(1, "NVIDIA GeForce RTX 4090")) == 3.29
    assert compare.target_for(run(8, "NVIDIA H100 80GB HBM3 x8")) == 3.28
    assert compare.target_for(run(2, "NVIDIA GeForce RTX 4090")) == 3.28
    assert compare.target_for(run(1, "NVIDIA H100 80GB HBM3")) == 3.28


def test_leaderboard_means_sorting_and_declared_target(two_logs, tmp_path):
    records = tmp_path / "records"
    slow, fast = records / "2025-01-01_Baseline", records / "Medium"
    for folder in (slow, fast):
        folder.mkdir(parents=True)
    (slow / "README.md").write_text("# Baseline\n")
    (slow / "seed1.txt").write_text(two_logs[0].read_text())   # 3.27 in 6.0 s
    (slow / "seed2.txt").write_text(two_logs[1].read_text())   # 3.35 in 4.8 s
    (fast / "README.md").write_text("# Medium\ntarget: 2.92\n")
    write_log(fast / "m.txt", "m", [10.8, 3.0], step_ms=10)      # 3.0 in 0.1 s: misses 2.92
    text = compare.leaderboard(records)
    rows = [l for l in text.splitlines() if l.startswith("| [")]
    assert "Medium" in rows[0] and "no (≤ 2.92)" in rows[0] and "| 0.1 |" in rows[0]
    assert "3.3100" in rows[1] and "5.4" in rows[1] and "| 2 |" in rows[1] and "no (≤ 3.28)" in rows[1]
    assert not (records / "README.md").exists()  # leaderboard() only builds the text
    compare.write_leaderboard(records / "README.md", text)
    assert compare.MARK_BEGIN in (records / "README.md").read_text() and rows[0] in (records / "README.md").read_text()


def test_matplotlib_only_imported_when_plotting(two_logs, tmp_path):
    code = ("import sys, compare; compare.main([sys.argv[1]]); "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported without --plot'")
    r = subprocess.run([sys.executable, "-c", code, str(two_logs[0])], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_reference_curve_and_delta_column(tmp_path):
    """A 2025-08-23 log gets that record's curve and Δ at its last val step by default."""
    log = write_log(tmp_path / "r.txt", "rec", [10.83, 4.70, 4.00], every=125, tps=393216,
                    extra_hp={"preset": "2025-08-23"})
    result = run_cli(log, "--plot", tmp_path / "r.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    head, _, row = result.stdout.splitlines()[:3]
    assert head.split()[-1] == "Δ_vs_record"
    assert row.split()[-1] == f"{4.00 - 4.0788:+.4f}"  # the record's val loss at step 250 is 4.0788
    assert compare.record_loss_at(125 + 50) == pytest.approx(4.6029 + (4.0788 - 4.6029) * 50 / 125)
    figure = compare.build_figure([compare.parse_log(log)], reference="2025-08-23")
    for axes in figure.axes:
        curve = [line for line in axes.get_lines() if line.get_gid() == "reference"]
        assert len(curve) == 1 and list(curve[0].get_ydata()) == [c[1] for c in compare.RECORD_CURVES["2025-08-23"]]
    cpu = write_log(tmp_path / "c.txt", "cpu", [10.83, 7.5])  # another preset: no reference unless asked
    assert "Δ_vs_record" not in run_cli(cpu, cwd=tmp_path).stdout
    assert "Δ_vs_record" in run_cli(cpu, "--reference", cwd=tmp_path).stdout


def test_a_2025_12_31_log_gets_its_records_curve_with_its_growing_batches(tmp_path):
    """--preset=2025-12-31 (and 2026-07-17 and record, its name now, against theirs): Δ against that record's val
    loss at step 250, and its curve on the tokens panel at the tokens its batch schedule had trained on (131,072 a
    step to 595, 262,144 to 1190, then 393,216)."""
    for preset, loss in (("2025-12-31", 4.6253), ("2026-07-17", 4.4888), ("record", 4.4888)):
        log = write_log(tmp_path / "n.txt", "new", [10.83, 4.60], every=250, tps=131072, extra_hp={"preset": preset})
        row = run_cli(log, cwd=tmp_path).stdout.splitlines()[2]
        assert row.split()[-1] == f"{4.60 - loss:+.4f}"
    figure = compare.build_figure([compare.parse_log(log)], reference="2025-12-31")
    tokens = [line for line in figure.axes[1].get_lines() if line.get_gid() == "reference"][0].get_xdata()
    assert list(tokens[[2, 5, 8]]) == [500 * 131072, 595 * 131072 + 595 * 262144 + 60 * 393216,
                                       595 * 131072 + 595 * 262144 + 635 * 393216]
