"""train_gpt.py's CUDA path on a virtual GPU (tools/virtual_gpu.py): its own Triton kernel under Triton's
interpreter, a fake-tensor step, inductor's compile for the GPU and train_gpt.py's own run on the null GPU, for
record on an H100, 4090 on a 4090 and a 5090, cpu on both; and planted mistakes that must fail. Needs a CUDA build of
torch (`python tools/virtual_gpu.py setup`, or VGPU_PYTHON) and a C compiler: skips without them."""
import functools
import importlib.util
import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

TOOL = ROOT / "tools" / "virtual_gpu.py"
spec = importlib.util.spec_from_file_location("virtual_gpu", TOOL)
virtual_gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(virtual_gpu)  # stdlib only: the CUDA part runs in the tool's own process

pytestmark = [
    pytest.mark.skipif(virtual_gpu.cuda_python() is None,
                       reason="no CUDA build of torch: run `python tools/virtual_gpu.py setup` or set VGPU_PYTHON"),
    pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) to build tools/vgpu_stub.c"),
]
GIB = 2**30


def tool(*args, train_gpt=None, env=None):
    """Run the tool; -> (return code, {level: report}, its output)."""
    extra = [f"--train_gpt={train_gpt}"] if train_gpt else []
    result = subprocess.run([sys.executable, str(TOOL), *args, *extra], capture_output=True, text=True, timeout=1500,
                            env=env)
    output = result.stdout + result.stderr
    reports = {}
    for line in result.stdout.splitlines():
        if line.startswith(virtual_gpu.REPORT_PREFIX):
            report = json.loads(line[len(virtual_gpu.REPORT_PREFIX):])
            reports[report["level"]] = report
    return result.returncode, reports, output


@functools.cache
def check(preset, gpu):
    code, reports, output = tool("check", f"--preset={preset}", f"--gpu={gpu}")
    assert code == 0, output[-4000:]
    return reports


def assert_healthy(reports, shared_limit, capability):
    kernels, fake, run = reports["kernels"], reports["fake"], reports["run"]
    assert max(kernels["max_relative_error"].values()) <= 2 ** -7 and kernels["post_is_relu2_of_pre"]
    assert fake["capability"] == capability and fake["fp8_head"]  # compute capability >= 8.9: FP8 head on
    assert fake["attention_bf16_blockmask"] and fake["attention_calls"] > 0
    assert fake["eager_eval_peak_gib"] < fake["memory_gib"]  # validation fits without compile too
    assert run["dynamo_graphs"] == 2  # training and validation; the window schedule moved through every size
    # the shared memory a kernel launches with, as compiled: below the limit Triton's loader sets for every kernel
    # over 48 KB (which is what the stand-in reported before)
    assert 0 < run["max_shared_bytes"] < shared_limit
    assert run["ptxas_runs"] > 0 and run["ptxas_peak_gib"] < 2 and run["fp8_head"]
    assert run["last_step"]["triton"] > 0 and run["last_step"]["blas_flops"] > 0 and run["peak_allocated_gib"] > 0
    assert run["last_step"]["fused_flops"] > 0 or fake["fp8_mlp"]  # relu2 in bf16 on CUDA: the fused MLP kernel


def test_record_preset_on_an_h100(record_compile_cache):
    code, reports, output = tool("check", "--preset=record", "--gpu=h100", env=record_compile_cache)
    assert code == 0, output[-4000:]
    assert_healthy(reports, 232_448, "9.0")
    run = reports["run"]
    assert run["compile_seconds"] < 300 and run["triton_kernels"] > 50 and run["extern_calls"] > 50
    assert run["peak_reserved_gib"] < 80


def test_4090_preset_fits_a_4090():
    reports = check("4090", "4090")
    assert_healthy(reports, 101_376, "8.9")
    run = reports["run"]
    assert run["compile_seconds"] < 300
    assert run["peak_allocated_gib"] <= 22 and run["peak_reserved_gib"] <= 23  # 24 GB card, room for the rest


def test_4090_preset_fits_a_5090_and_the_report_estimates_its_time():
    """The report of one step on the virtual RTX 5090 (compute capability 12.0, 99 KB of shared memory a block,
    32 GB): it compiles and fits, and estimates the whole run's time, marked as an estimate."""
    code, reports, output = tool("report", "--preset=4090", "--gpu=5090", "--steps=2")
    assert code == 0, output[-4000:]
    run = reports["run"]
    assert run["capability"] == "12.0" and 0 < run["max_shared_bytes"] < 101_376
    assert run["peak_allocated_gib"] <= 30 and run["peak_reserved_gib"] <= 31  # 32 GB card, room for the rest
    estimate = re.search(r"^\| ESTIMATE, not measured: training time \(s\), the roofline times 1390 steps .*"
                         r"RTX 5090 fork: 1,093 s.* \| (\d+) \|$", output, re.M)
    roofline = re.search(r"^\| roofline \(ms\).* \| ([\d.]+) \|$", output, re.M)
    assert estimate and roofline, output[-3000:]
    import train_gpt as tg  # the preset's run: its steps, each weighed by its tokens against the full batch's
    args = tg.parse_args(["--preset=4090"])
    steps = sum(tg.tokens_per_step_at(step, args) for step in range(args.num_iterations)) / 393_216
    assert int(estimate[1]) == pytest.approx(float(roofline[1]) * steps / 1000, abs=1)


@pytest.mark.parametrize("gpu,limit,capability", [("h100", 232_448, "9.0"), ("4090", 101_376, "8.9")])
def test_cpu_preset_on_both_gpus(gpu, limit, capability):
    assert_healthy(check("cpu", gpu), limit, capability)  # compile=False: eager, flex_attention compiled alone


def planted(tmp_path, old, new):
    """A copy of train_gpt.py with one change."""
    source = (ROOT / "train_gpt.py").read_text()
    assert source.count(old) == 1, old
    path = tmp_path / "train_gpt.py"
    path.write_text(source.replace(old, new))
    return path


def test_row_major_fp8_operand_fails_the_fake_step(tmp_path):
    copy = planted(tmp_path, "logits = torch._scaled_mm(x_f8, w_f8.T,",
                   "logits = torch._scaled_mm(x_f8, w_f8.T.contiguous(),")
    code, reports, output = tool("fake", "--preset=cpu", "--gpu=h100", train_gpt=copy)
    assert code != 0 and "fake" not in reports
    assert "column-major" in output or "mat2" in output, output[-2000:]


def test_fp32_attention_inputs_fail_the_fake_step(tmp_path):
    copy = planted(tmp_path, "y = attention(q.to(dtype), k.to(dtype), v.to(dtype),",
                   "y = attention(q.float(), k.float(), v.float(),")
    code, reports, output = tool("fake", "--preset=cpu", "--gpu=h100", train_gpt=copy)
    assert code != 0 and not reports["fake"]["attention_bf16_blockmask"]
    assert "vgpu: FAIL attention inputs (['torch.float32'" in output


@pytest.mark.parametrize("old,new", [
    ("(c.to(tl.float32) * (2 * r))", "(c.to(tl.float32) * r)"),  # ReLU²'s slope without its 2
    ("relu2_epilogue(right, out_desc, aux_desc, m, n + BLOCK_N // 2, FORWARD)",
     "relu2_epilogue(right, out_desc, aux_desc, m, n, FORWARD)"),  # the tile's right half stored over its left
    ("return grad_pre @ fc.T, x.T @ grad_pre, grad.T @ post", "return grad_pre @ fc.T, x.T @ grad_pre, grad.T @ pre"),
    ("r = tl.maximum(c.to(tl.float32), 0, propagate_nan=tl.PropagateNan.ALL)",
     "r = tl.maximum(c.to(tl.float32), 0)"),  # maxnum: on a GPU a NaN weight would become a dead unit
])
def test_wrong_mlp_kernel_fails_under_the_interpreter(tmp_path, old, new):
    code, reports, output = tool("kernels", train_gpt=planted(tmp_path, old, new))
    assert code != 0 and "vgpu: FAIL ReLU² MLP kernel:" in output, output[-2000:]


def test_attention_called_under_another_name_fails_the_fake_step(tmp_path):
    """The fake step watches train_gpt.attention: attention called under a new name must fail the check, not pass
    with nothing seen."""
    copy = planted(tmp_path, "y = attention(q.to(dtype)", "y = attend(q.to(dtype)")
    source = copy.read_text()
    copy.write_text(source.replace("\ndef build_masks(", "\nattend = attention  # renamed\n\n\ndef build_masks("))
    code, reports, output = tool("fake", "--preset=cpu", "--gpu=h100", train_gpt=copy)
    assert code != 0 and reports["fake"]["attention_calls"] == 0
    assert "vgpu: FAIL no attention call seen" in output, output[-2000:]


def test_an_fp8_head_that_makes_no_fp8_matmul_fails_the_fake_step(tmp_path):
    copy = planted(tmp_path, "if self.use_fp8 and self.training and targets is not None:",
                   "if False and self.use_fp8 and self.training and targets is not None:")
    code, reports, output = tool("fake", "--preset=cpu", "--gpu=h100", train_gpt=copy)
    assert code != 0 and reports["fake"]["fp8_head"] and reports["fake"]["fp8_calls"] == 0
    assert "vgpu: FAIL the FP8 head is on but the training step made no FP8 matmul" in output, output[-2000:]


def test_oversized_flex_blocks_fail_on_a_4090(tmp_path):
    copy = planted(tmp_path, "y = flex(q, k, v, block_mask=mask, scale=scale)",
                   'y = flex(q, k, v, block_mask=mask, scale=scale, kernel_options={"BLOCK_M": 128, "BLOCK_N": 128, '
                   '"num_stages": 3})')
    code, _, output = tool("run", "--preset=cpu", "--gpu=4090", "--head_dim=128", "--model_dim=256", "--steps=1",
                           train_gpt=copy)
    assert code != 0 and re.search(r"out of resource: triton_\w+ Required: \d+ Hardware limit: ?101376", output), (
        output[-3000:])


@pytest.mark.skipif(not (ROOT.parent / "shared" / "reference").is_dir(), reason="../shared/reference is absent")
def test_report_puts_one_step_beside_the_records_own_script(record_compile_cache):
    """The 2026-07-17 record's model and optimizers (its own code and Triton kernels, its CUDA cross-entropy kernel
    compiled by NVRTC, its FlashAttention-3 calls computed by our flex call) beside ours (--preset=record, our
    kernels compiled by test_record_preset_on_an_h100 already), one optimizer step each on the virtual H100, and
    the estimate of a whole run. Then the collectives of a step at 8 GPUs: both reduce-scatter gradients and
    all-gather weights; the record exchanges only the bigram rows its tokens hit (all-to-all), ours reduce-scatters
    the whole table."""
    code, reports, output = tool("report", "--preset=record", "--gpu=h100", "--steps=3", env=record_compile_cache)
    assert code == 0, output[-4000:]
    ours, record = reports["run"]["last_step"], reports["record"]["last_step"]
    assert "| one optimizer step on the virtual h100 | train_gpt.py | record 2026-07-17 (its script) |" in output
    assert re.search(r"^\| roofline \(ms\).* \| [\d.]+ \| [\d.]+ \|$", output, re.M)
    assert re.search(r"^\| ESTIMATE, not measured: training time \(s\).* \| \d+ \| \d+ \|$", output, re.M)
    for step in (ours, record):
        assert step["triton"] > 0 and step["blas_flops"] > 1e14 and 0 < step["peak_allocated_gib"] < 80
    sent, ours = reports["record"]["communication"], reports["run"]["communication"]
    assert sent["all_to_all"] > 1e6 and ours["all_to_all"] == 0  # its sparse rows, megabytes of them
    assert ours["reduce_scatter"] > sent["reduce_scatter"] + 100e6 and sent["all_gather"] > 0
    assert re.search(r"^\| each GPU sends, MB per step .* \| \d+ \| \d+ \|$", output, re.M)
