"""tools/gpu_check.py, the check a lent GPU runs: its budgets, its reading of train_gpt.py's logs, and every stage as
a dry-run on the virtual GPU with planted failures (a wrong kernel slope, a missing shard, a stage over budget).
The dry-runs need the virtual GPU's CUDA build of torch and skip without it (the virtual_gpu fixture)."""
import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED

TOOL = ROOT / "tools" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", TOOL)
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)  # stdlib only at import: the stages import torch in their own processes


def test_budgets_add_up_to_nine_minutes_on_an_h100():
    assert set(gpu_check.BUDGETS) == set(gpu_check.ESTIMATES) == set(gpu_check.STAGES)
    assert sum(gpu_check.BUDGETS.values()) <= gpu_check.TOTAL_LIMIT_S == 9 * 60
    for name, parts in gpu_check.ESTIMATES.items():
        assert gpu_check.BUDGETS[name] >= sum(parts.values())  # each budget covers its estimate


def test_a_train_log_gives_compile_time_step_time_and_peak(tmp_path):
    """Step time is taken from step TIMED_FROM on (the first steps include the gradient check), also from a log
    that stops half way (a run stopped at its budget)."""
    lines = ["warmup: 1 untimed steps (compilation) took 51.5s"]
    for step, time_ms in ((1, 1500), (4, 4000), (8, 7200), (10, 8800), (12, 10400)):
        lines.append(f"step:{step}/12 train_loss:{10 - step / 10:.4f} train_time:{time_ms}ms step_avg:1.00ms"
                     f" tokens:{393216 * step} tok/s:1 mfu:1.0% eta:0m01s")
    lines += ["step:12/12 val_loss:7.1234 val_bpb:2.0 train_time:10400ms step_avg:866.67ms tokens:4718592",
              "peak memory allocated: 29000 MiB reserved: 30720 MiB"]
    (tmp_path / "log.txt").write_text("\n".join(lines) + "\n")
    found = gpu_check.read_train_log(str(tmp_path / "log.txt"))
    assert found["compile_s"] == 51.5 and found["steps_done"] == 12 and found["train_loss"] == 8.8
    assert found["step_ms"] == pytest.approx((10400 - 4000) / 8) and found["timed_steps"] == "5-12"
    assert found["tok_s"] == pytest.approx(393216 / 0.8) and found["val_loss"] == 7.1234
    assert found["peak_allocated_gib"] == pytest.approx(29000 / 1024) and found["peak_reserved_gib"] == 30
    (tmp_path / "cut.txt").write_text("\n".join(lines[:4]) + "\n")  # stopped after step 8
    cut = gpu_check.read_train_log(str(tmp_path / "cut.txt"))
    assert cut["steps_done"] == 8 and cut["step_ms"] == pytest.approx(800) and "peak_allocated_gib" not in cut


def dry_run(tmp_path, *options, env=None):
    """-> (exit code, report.json, report.md, output)"""
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(TOOL), "--dry-run", f"--out={out}", *options], capture_output=True,
                            text=True, timeout=1800, env=env)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    markdown = (out / "report.md").read_text() if (out / "report.md").exists() else ""
    return result.returncode, report, markdown, result.stdout + result.stderr


@pytest.mark.skipif(not (SHARED / "proxy").is_dir() or not (SHARED / "reference").is_dir(),
                    reason="../shared/proxy or ../shared/reference is absent")
def test_dry_run_reports_every_stage(virtual_gpu, tmp_path):
    code, report, markdown, output = dry_run(tmp_path)
    assert code == 0, output[-4000:]
    assert "budgets (s, x6): env 84, mlp_kernel 258" in output and "all stages 538 s on an H100 (limit 540)" in output
    stages = report["stages"]
    assert list(stages) == gpu_check.STAGES and all(r["status"] == "ok" for r in stages.values())
    for name in gpu_check.STAGES:
        assert f"| {name} | " in markdown
    assert stages["env"]["fp8_head"] and stages["env"]["mlp_tiles"]["forward"] == [128, 256, 64, 4, 8]
    assert all(check["nan_reaches_output"] for check in stages["mlp_kernel"]["checks"].values())
    assert stages["fp8_head"]["errors"]["loss"] < 0.01  # computed on the CPU: real values
    for name in ("record", "unfused", "preset_4090"):  # train_gpt.py's own runs, read back from their logs
        assert stages[name]["compile_s"] > 0 and stages[name]["steps_done"] > 0 and stages[name]["step_ms"] > 0
    assert stages["record"]["steps_done"] == 12 and "val_loss" in stages["record"]
    assert stages["record"]["roofline_ms"] > 0 and stages["record"]["predicted_peak_gib"] == 24.7
    assert stages["record_script"]["step_ms"] > 0 and stages["preset_4090"]["fits_24gb"]


def test_a_wrong_kernel_slope_fails_the_kernel_stage(virtual_gpu, tmp_path):
    source = (ROOT / "train_gpt.py").read_text()
    old = "(c.to(tl.float32) * (2 * r))"  # ReLU²'s slope in the backward epilogue
    assert source.count(old) == 1
    planted = tmp_path / "train_gpt.py"
    planted.write_text(source.replace(old, "(c.to(tl.float32) * r)"))
    code, report, markdown, output = dry_run(tmp_path, "--stages=mlp_kernel", f"--train_gpt={planted}")
    assert code != 0 and report["stages"]["mlp_kernel"]["status"] == "failed", output[-3000:]
    assert any("grad at pre" in reason for reason in report["stages"]["mlp_kernel"]["failures"])
    assert "- mlp_kernel: ragged 200 x 96: grad at pre" in markdown


def test_a_missing_shard_fails_its_stage_in_one_line_and_the_others_report(virtual_gpu, tmp_path):
    code, report, markdown, output = dry_run(tmp_path, "--stages=env,record,fp8_head", f"--data={tmp_path}")
    stages = report["stages"]
    assert code != 0 and stages["record"]["status"] == "failed"
    assert stages["record"]["failures"] == [f"train_gpt.py: no shard matches '{tmp_path}/proxy/wiki_train_*.bin'"
                                            " (download with `python cached_fineweb10B.py 9` or set --train_files)"]
    assert stages["env"]["status"] == "ok" and stages["fp8_head"]["status"] == "ok"
    assert "| fp8_head | " in markdown and "| record | " in markdown


def test_a_stage_is_stopped_at_its_budget(virtual_gpu, tmp_path):
    code, report, markdown, output = dry_run(tmp_path, "--stages=flex,env", "--budget_scale=0.05")  # 2 s for flex
    flex = report["stages"]["flex"]
    assert code != 0 and flex["status"] == "stopped" and flex["stopped"] == "stopped at its budget of 2 s"
    assert flex["seconds"] < 10 and report["stages"]["env"]["status"] in ("ok", "stopped")
