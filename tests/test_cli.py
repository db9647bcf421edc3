"""Hyperparameters from presets and --field=value (train_gpt.py's Hyperparameters section)."""
import dataclasses
import shutil
import subprocess
import sys

import pytest

import train_gpt as tg
from conftest import ROOT, TINY


def test_overrides_are_parsed_by_the_field_type():
    args = tg.parse_args(["--num_iterations=500", "--muon_lr=0.03", "--qk_norm=FALSE", "--x0_skip=1",
                          "--no_attn_layers=3,5", "--no_mlp_layers=", "--window_pattern=SSSL", "--adam_betas=0.9,0.99"])
    assert args.num_iterations == 500 and args.muon_lr == 0.03 and args.qk_norm is False and args.x0_skip is True
    assert args.no_attn_layers == (3, 5) and args.no_mlp_layers == () and args.adam_betas == (0.9, 0.99)


def test_preset_then_overrides():
    args = tg.parse_args(["--preset=cpu", "--num_layers=6"])
    assert args.num_layers == 6 and args.model_dim == tg.PRESETS["cpu"]["model_dim"]
    old = tg.parse_args(["--preset=2025-08-23"])
    assert old == tg.dataclasses.replace(tg.parse_args([]), preset="2025-08-23")  # 2025-08-23 = the defaults
    record = tg.parse_args(["--preset=record"])  # the newest record here
    assert record == tg.dataclasses.replace(tg.parse_args(["--preset=2026-07-17"]), preset="record")
    assert record.num_iterations == 1390 and record.yarn and record.mudd


@pytest.mark.parametrize("argv,message", [
    (["--num_iteration=5"], "unknown field --num_iteration (did you mean --num_iterations?)"),
    (["--num_iterations=five"], "--num_iterations='five' is not a valid int"),
    (["--qk_norm=yes"], "--qk_norm='yes' is not a valid bool"),
    (["--mlp_act=relu"], "--mlp_act='relu' is not one of relu2, gelu"),
    (["--no_attn_layers=1,x"], "--no_attn_layers='1,x' is not a valid"),
    (["--preset=gpu"], "unknown --preset='gpu'"),
    (["num_iterations=5"], "is not of the form --field=value"),
    (["--window_pattern=SLX"], "--window_pattern='SLX' must be a string of S and L"),
    (["--no_attn_layers=12"], "--no_attn_layers=(12,) must be layer indices in 0..11"),
    (["--batch_schedule=100-3"], "--batch_schedule: '100-3' is not STEP:VALUE"),
    (["--max_doc_len=2048", "--doc_len_schedule=10:0"], "--doc_len_schedule='10:0' must be lengths above 0"),
    (["--doc_len_schedule=10:2048"], "--doc_len_schedule='10:2048' must be empty without --max_doc_len"),
    (["--seq_len=1000"], "--seq_len=1000 must be a multiple of the 128-token attention block"),
    (["--val_tokens=100000"], "--val_tokens=100000 must be a positive multiple of val_seq_len = 262144"),
    (["--profile_steps=-1"], "--profile_steps=-1 must be 0 or more"),
    (["--max_doc_len=-1"], "--max_doc_len=-1 must be 0 or more"),
    (["--softcap_form=shift"], "--softcap_form='shift' is not one of tanh, sigmoid, shifted"),
    (["--seq_len=0"], "--seq_len=0 must be positive"), (["--top_k=-1"], "--top_k=-1 must be 0 or more"),
    (["--gated_skip=6,3"], "--gated_skip=(6, 3) must be empty or two layers i < j in 0..11"),
    (["--value_embed_layout=0123"], "--value_embed_layout='0123' must be empty or a character per layer (12)"),
    (["--preset=2025-12-31", "--seqs_per_step=3"], "--seqs_per_step=3 must be 0, or with --micro_batch_seqs=1 a"),
    (["--extension_steps=1695"], "--extension_steps=1695 must be 0 or more and below num_iterations"),
    (["--adam_recipe=2026"], "--adam_recipe='2026' is not one of 2025-08-23, 2025-12-31"),
    (["--resume=no/such.pt"], "cannot read checkpoint no/such.pt"),
])
def test_bad_values_are_one_line_errors_naming_the_field(argv, message):
    with pytest.raises(tg.ConfigError) as err:
        tg.parse_args(argv)
    assert message in str(err.value)


@pytest.mark.parametrize("case", ["--seq_len=0", "--micro_batch_seqs=0", "--train_log_every=0", "--head_dim=0",
                                  "--tokens_per_step=0", "resume a text file", "resume another shape",
                                  "sample with top_k -1"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, case):
    """main() as the command line calls it, in this process: it exits with one line and writes no file."""
    monkeypatch.chdir(tmp_path)
    args = tg.parse_args(TINY)
    tg.save_atomically(dict(args=dataclasses.asdict(args), step=2, model=tg.GPT(args).state_dict()), "tiny.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    argv, expected = {
        "resume a text file": (["--resume=notes.txt"], "train_gpt.py: cannot read checkpoint notes.txt: "),
        "resume another shape": (["--resume=tiny.pt", "--preset=medium"],
                                 "train_gpt.py: tiny.pt holds another model: --num_layers=16 (trained: 4)"),
        "sample with top_k -1": (["--sample=tiny.pt", "--top_k=-1"], "train_gpt.py: --top_k=-1 must be 0 or more"),
    }.get(case, ([case], f"train_gpt.py: {case} must be positive"))
    before = sorted(tmp_path.rglob("*"))
    model = [] if case == "resume another shape" else TINY  # the checkpoint's model, then --preset=medium's
    with pytest.raises(SystemExit) as exit_:
        tg.main([*model, *argv])
    message = str(exit_.value.code)
    assert "\n" not in message and message.startswith(expected), message
    assert sorted(tmp_path.rglob("*")) == before


def test_command_line_error_exits_nonzero_with_one_line():
    result = subprocess.run([sys.executable, "train_gpt.py", "--muon_lr=fast"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip() == "train_gpt.py: --muon_lr='fast' is not a valid float"


def test_import_has_no_side_effects(tmp_path):
    code = "import os, sys; sys.path.insert(0, sys.argv[1]); import train_gpt; print(sorted(os.listdir('.')))"
    result = subprocess.run([sys.executable, "-c", code, str(ROOT)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]"


def test_batch_schedule_stages():
    args = tg.parse_args(["--preset=cpu", "--batch_schedule=10:2048,30:4096"])
    assert [tg.tokens_per_step_at(s, args) for s in (0, 9, 10, 29, 30, 59)] == [1024, 1024, 2048, 2048, 4096, 4096]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has NVIDIA GPUs")
def test_run_sh_without_gpu_points_to_the_cpu_preset():
    result = subprocess.run(["bash", "run.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "no NVIDIA GPU visible" in result.stdout and "python train_gpt.py --preset=cpu" in result.stdout
