"""GPU check: what only a real GPU answers about train_gpt.py, in one command of at most 9 minutes on an H100.

On a lent GPU (the `device` tool: one call, 15 minutes of device time per task, start-up included), first, here,
copy what the run reads into .gpu/ (git-ignored, 42 MB of the 64 MB that travel; ../shared does not travel):

    mkdir -p .gpu/reference && cp -r ../shared/proxy ../shared/tiktoken_cache .gpu/ \\
        && cp ../shared/reference/modded-nanogpt_2025-12-31_96a77cab.txt .gpu/reference/

then one `run` with carry [".gpu"] and timeout_s 600, and `give_back` at once (budgets half as long again as
their H100 estimates, since the first compile on a fresh machine is slower than the virtual GPU's, but never past
575 s):

    PYTHONUNBUFFERED=1 python3 tools/gpu_check.py --out=$OUT --budget_scale=1.5 --deadline=575

$OUT/report.md goes into README's "Measured on a GPU"; $OUT/report.json and $OUT/gpu_check.log (every stage's
output, the training logs without their source) beside it. Both reports are rewritten after every stage, so a
call cut short still brings back the stages done.

    python tools/gpu_check.py --dry-run --out=DIR     # every stage on the virtual GPU: the plumbing, in CI

Options: --out=DIR; --data=DIR (proxy/ shards, tiktoken_cache/, reference/; default .gpu, or ../shared in a
dry-run); --stages=a,b (a subset); --train_gpt=PATH (a changed copy); --budget_scale=X (every budget times X;
a dry-run's default is DRY_RUN_SCALE: the null GPU compiles on this machine's 2 cores); --deadline=S (no stage
runs past S seconds from the start: later stages get what is left, or are skipped; the last stage gets all that
is left).

Stages, in order of value; each runs in a process of its own with its own time budget, stopped at it, so a hang
or a failure in one loses none of the others:
  env            GPU, SMs, shared memory per block, versions, the MLP kernel's tiles, whether the FP8 head is on
  mlp_kernel     the fused ReLU² MLP against the unfused torch ops, forward and backward, at the record's shape
                 and a ragged one, both tile configurations, eager and under torch.compile; a NaN probe; each
                 kernel's shared memory, registers and spills as compiled
  fp8_head       FP8HeadLoss against an fp32 head with the same softcap: loss and gradients of two accumulated
                 micro-batches with the loss scaled
  flex           FlexAttention with train_gpt's BlockMask against SDPA with the dense mask, forward and backward
  record         --preset=2025-12-31 on real text (record is 2026-07-17's since 2026-11-28; these stages keep
                 the 12-31 math until they are budgeted for 07-17's): compile time, step time at its full
                 393,216-token batch
                 (accumulation on one GPU; its last batch stage from the start, no extension steps, the
                 embedding tied throughout as in its first two thirds: one graph to compile), tok/s, MFU,
                 allocator peak beside the virtual GPU's prediction
  unfused        --fused_mlp=false: step time and train loss after the same steps as `record`
  preset_4090    the 12-31 math as the 4090 preset had it (16 sequences a step) under --memory_cap_gib=24, as
                 `record`: fits or not, and its peak (validation
                 skipped, as in unfused: its compile would not fit the 9 minutes)
  record_script  the 2025-12-31 record's own model and optimizers (tools/record.py; its FlashAttention-3 calls
                 computed by our FlexAttention call) on the same batches, at its schedule of steps 1000-1012
                 (window 7, tied: one graph): its step time beside ours. Last, since on the first lease
                 (an H200) the 2025-08-23 script's first step did not end within 299 s: it prints where that
                 step's time goes. Its Polar Express kernels run with one of their 30 autotune configurations
                 (record.PINNED; speed only, not its math)
In a dry-run the values are not real (the null GPU computes garbage; check_finite is off) except mlp_kernel's,
computed by Triton's interpreter on the CPU, and fp8_head's, computed on the CPU: a wrong kernel fails there too.
"""
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import virtual_gpu  # noqa: E402  (stdlib only at import, as this driver)
RESULT = "gpu-check: "  # a stage's findings, one JSON line each (merged in order)
DRY_RUN_SCALE = 6
TOTAL_LIMIT_S = 540  # one H100, compiles included: 9 of the lease's 15 minutes, the rest for start-up and a margin

# What each stage is expected to take on an H100, in seconds, from the virtual GPU (README, tools/virtual_gpu.py
# run/report, torch 2.11.0+cu130): compile of the record preset's training step about 57 s (4090 preset: 75 s);
# roofline of one record step 0.75 s (ours) and 0.83 s (the record's script). Start-up (imports, data, model) and
# the small compiles (one MLP, flex alone, validation's graph) are assumptions. A budget is its estimate plus 15%.
COMPILE_S, VAL_COMPILE_S, STEP_S, SCRIPT_STEP_S = 57, 25, 0.75, 0.83
TRAIN_STEPS, TIMED_FROM = 12, 4  # record/unfused/record_script: 12 steps after 1 untimed, timed from step 4 on
ESTIMATES = {
    "env": dict(start=12),
    "mlp_kernel": dict(start=12, compile=20, run=5),
    "fp8_head": dict(start=12, run=2),
    "flex": dict(start=12, compile=20, run=2),
    "record": dict(start=15, compile=COMPILE_S, steps=(TRAIN_STEPS + 1) * STEP_S, validation=VAL_COMPILE_S),
    "unfused": dict(start=15, compile=COMPILE_S, steps=(TRAIN_STEPS + 1) * STEP_S),  # validation skipped
    "preset_4090": dict(start=15, compile=75, steps=7 * STEP_S),  # validation skipped
    # last: on the first lease (README, Measured on a GPU) its first step took longer than 299 s, cause unknown
    "record_script": dict(start=15, compile=COMPILE_S, steps=(TRAIN_STEPS + 1) * SCRIPT_STEP_S),
}
BUDGETS = {name: math.ceil(1.15 * sum(parts.values())) for name, parts in ESTIMATES.items()}
STAGES = list(BUDGETS)

# The virtual GPU's prediction for what the real run measures (README's performance table: tools/virtual_gpu.py
# report --preset=record --gpu=h100, torch 2.11.0+cu130): model FLOPs and generated-kernel bytes of one record
# step, the allocator peak; the roofline for the GPU at hand as the report computes it (virtual_gpu.roofline_ms).
PREDICTED = {"record": dict(flops=3.03e14, kernel_bytes=6.34e11, peak_gib=24.7),
             "record_script": dict(flops=3.03e14, kernel_bytes=8.49e11, peak_gib=28.2),
             "preset_4090": dict(peak_gib=14.5)}

# train_gpt.py's runs; --train_files, --val_files, --run_id (and --check_finite=false in a dry-run) are added
LAST_STAGE = ["--batch_schedule=", "--tokens_per_step=393216", "--extension_steps=0", "--tied_embed_until=1"]
# the 2025-12-31 math (--preset=record is 2026-07-17's since 2026-11-28: these budgets and predictions are for
# 12-31's; 2026-07-17 compiles in ~120 s on the virtual GPU, README)
RECORD_1231 = ["--preset=2025-12-31"]
TRAIN_RUNS = {
    "record": [*RECORD_1231, *LAST_STAGE, f"--num_iterations={TRAIN_STEPS}", "--warmup_steps=1",
               f"--train_log_every={TIMED_FROM}", "--val_loss_every=0", "--val_tokens=262144",
               "--save_checkpoint=false"],
    "preset_4090": [*RECORD_1231, "--seqs_per_step=16", "--val_seq_len=32768", *LAST_STAGE, "--memory_cap_gib=24",
                    "--num_iterations=6", "--warmup_steps=1",
                    "--train_log_every=2", "--val_loss_every=0", "--val_tokens=32768", "--save_checkpoint=false"],
}
TRAIN_RUNS["unfused"] = [*TRAIN_RUNS["record"], "--fused_mlp=false"]


# -----------------------------------------------------------------------------
# Driver (stdlib only): each stage in a process of its own, stopped at its budget; the reports after each


def main(argv):
    options = dict(arg[2:].split("=", 1) if "=" in arg else (arg[2:], "1") for arg in argv)
    unknown = set(options) - {"out", "data", "stages", "train_gpt", "budget_scale", "deadline", "dry-run"}
    if unknown or not argv:
        raise SystemExit(f"gpu_check: unknown option --{sorted(unknown)[0]}" if unknown else __doc__)
    dry_run = "dry-run" in options
    stages = options.get("stages", ",".join(STAGES)).split(",")
    if set(stages) - set(STAGES):
        raise SystemExit(f"gpu_check: --stages: {', '.join(sorted(set(stages) - set(STAGES)))} is not one of"
                         f" {', '.join(STAGES)}")
    out = os.path.abspath(options.get("out") or "gpu_check_out")
    data = os.path.abspath(options.get("data") or os.path.join(ROOT, "..", "shared") if dry_run
                           else options.get("data") or os.path.join(ROOT, ".gpu"))
    scale = float(options.get("budget_scale", DRY_RUN_SCALE if dry_run else 1))
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="gpu_check_")  # the runs' logs/, and one compile cache for all stages
    python, env = sys.executable, dict(os.environ)
    if dry_run:
        python, env = virtual_gpu.environment("h100")
        env["VGPU_PTXAS_LOG"] = os.path.join(work, "ptxas.log")
    cache = os.environ.get("VGPU_CACHE", work) if dry_run else work  # a dry-run may share the virtual GPU's
    env.update(PYTHONUNBUFFERED="1", TORCHINDUCTOR_CACHE_DIR=cache,
               TRITON_CACHE_DIR=os.path.join(cache, "triton"), TIKTOKEN_CACHE_DIR=os.path.join(data, "tiktoken_cache"))
    log = open(os.path.join(out, "gpu_check.log"), "w")
    say = lambda line: (print(line, flush=True), log.write(line + "\n"), log.flush())
    say(f"gpu_check: {'dry-run on the virtual H100' if dry_run else 'GPU'}, data {data}, budgets (s, x{scale:g}): "
        + ", ".join(f"{name} {BUDGETS[name] * scale:.0f}" for name in stages)
        + f"; all stages {sum(BUDGETS.values())} s on an H100 (limit {TOTAL_LIMIT_S})")
    results, start, deadline = {}, time.perf_counter(), float(options.get("deadline", "inf"))
    for name in stages:
        left = deadline - (time.perf_counter() - start)
        if left < 5:
            results[name] = dict(status="skipped", seconds=0, budget_s=0,
                                 failures=[f"skipped: --deadline={deadline:g} s reached"])
        else:
            budget = left if name == stages[-1] and left < math.inf else min(BUDGETS[name] * scale, left)
            try:
                results[name] = run_and_judge(name, budget, work, data, python, env, options, dry_run, say)
            except Exception as e:  # a fault of this script's own must not cost the stages still to run
                results[name] = dict(status="failed", seconds=0, budget_s=0,
                                     failures=[f"gpu_check: {type(e).__name__}: {e}"])
        say(f"[{name}] {results[name]['status']} in {results[name]['seconds']:.0f} s"
            + "".join(f"\n[{name}] FAIL {reason}" for reason in results[name]["failures"]))
        write_reports(out, results, dry_run, scale)
    failed = [name for name, r in results.items() if r["status"] != "ok"]
    say(f"gpu_check: {len(results) - len(failed)} of {len(results)} stages ok"
        + (f"; not ok: {', '.join(failed)}" if failed else "") + f"; reports in {out}")
    return 1 if failed else 0


def run_and_judge(name, budget, work, data, python, env, options, dry_run, say):
    """One stage in its own process, stopped at `budget` seconds; -> its findings, judged."""
    train_gpt = os.path.abspath(options.get("train_gpt", os.path.join(ROOT, "train_gpt.py")))
    command = [python, os.path.abspath(__file__), f"--stage={name}", f"--data={data}", f"--work={work}",
               f"--train_gpt={train_gpt}", *["--dry-run"] * dry_run]
    interpret = dict(TRITON_INTERPRET="1" if dry_run and name == "mlp_kernel" else "0")  # set before import
    result = run_stage(command, {**env, **interpret}, budget, say, name)
    result["budget_s"] = budget
    if name in TRAIN_RUNS:
        result.update(read_train_log(os.path.join(work, "logs", f"gpucheck_{name}.txt")))
    return judge(name, result, dry_run)


def run_stage(command, env, budget, say, name):
    """Run one stage's process; stop it (its whole process group) at its budget. -> its merged findings."""
    start, result, lines = time.perf_counter(), {}, []
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=ROOT)

    def read():
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith(RESULT):
                result.update(json.loads(line[len(RESULT):]))
            else:
                lines.append(line)
                say(f"[{name}] {line}")
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
        result["stopped"] = f"stopped at its budget of {budget:.0f} s"
    reader.join(timeout=10)
    errors = [line for line in lines if re.match(r"(train_gpt\.py|gpu_check|\w*Error|\w+Exception)\b", line)]
    result.update(exit_code=code, seconds=time.perf_counter() - start)
    if code and "error" not in result and "stopped" not in result:
        result["error"] = errors[-1] if errors else (lines[-1] if lines else f"exit code {code}")
    return result


def read_train_log(path):
    """What a train_gpt.py log says (also of a run stopped half way): compile time, the train loss of its last
    step line, timed step time from step TIMED_FROM on, val loss, allocator peak."""
    if not os.path.exists(path):
        return {}
    text, found = open(path).read(), {}
    if match := re.search(r"^warmup: .* took ([\d.]+)s", text, re.M):
        found["compile_s"] = float(match[1])
    steps = {int(m[1]): dict(loss=float(m[2]), time_ms=float(m[3]), tokens=int(m[4])) for m in re.finditer(
        r"^step:(\d+)/\d+ train_loss:([\d.naif]+) train_time:(\d+)ms step_avg:[\d.]+ms tokens:(\d+)", text, re.M)}
    if steps:
        last = max(steps)
        found.update(steps_done=last, train_loss=steps[last]["loss"])
        first = TIMED_FROM if TIMED_FROM in steps and last > TIMED_FROM else min(steps)
        if last > first:
            found["step_ms"] = (steps[last]["time_ms"] - steps[first]["time_ms"]) / (last - first)
            found["timed_steps"] = f"{first + 1}-{last}"
            found["tok_s"] = (steps[last]["tokens"] - steps[first]["tokens"]) / (last - first) / found["step_ms"] * 1e3
    if match := re.search(r"^step:\d+/\d+ val_loss:([\d.naif]+)", text, re.M):
        found["val_loss"] = float(match[1])
    if match := re.search(r"^peak memory allocated: (\d+) MiB reserved: (\d+) MiB", text, re.M):
        found.update(peak_allocated_gib=int(match[1]) / 1024, peak_reserved_gib=int(match[2]) / 1024)
    return found


def judge(name, result, dry_run):
    """A stage's status ('ok', 'failed', 'stopped') and the reasons, from its findings."""
    bad = [result["error"]] if result.get("error") else []
    if name == "mlp_kernel":
        for shape, check in result.get("checks", {}).items():
            bad += [f"{shape}: {what} off by {err:.3g} of its largest value (limit 2**-7)"
                    for what, err in check["max_relative_error"].items() if not err <= 2 ** -7]
            bad += [f"{shape}: relu(pre)² is not relu(pre)² of its own pre"] * (not check["post_is_relu2_of_pre"])
            bad += [f"{shape}: a NaN weight gives a finite output"] * (not check["nan_reaches_output"])
    if name == "fp8_head" and "errors" in result:
        errors = result["errors"]
        bad += [f"loss off by {errors['loss']:.3g} of the fp32 head's (limit 0.01)"] * (not errors["loss"] <= 0.01)
        bad += [f"{grad}: cosine {c:.4f} (limit 0.99) or norm ratio {r:.3f} (limit 1 +- 0.05)"
                for grad, (c, r) in errors["grads"].items() if not (c >= 0.99 and abs(r - 1) <= 0.05)]
    if name == "flex" and not dry_run and "errors" in result:
        bad += [f"{what} off by {err:.3g} of its largest value (limit 2**-5)"
                for what, err in result["errors"].items() if not err <= 2 ** -5]
    if name in PREDICTED and "peak_allocated_gib" in result:
        result["predicted_peak_gib"] = PREDICTED[name]["peak_gib"]
    if name in ("record", "record_script") and result.get("step_ms") and result.get("gpu"):
        gpu = next((k for k in virtual_gpu.GPU_PEAKS if k.upper() in result["gpu"].upper()), "h100")
        result["roofline_ms"] = virtual_gpu.roofline_ms(PREDICTED[name]["flops"], PREDICTED[name]["kernel_bytes"], gpu)
    if name in ("record", "unfused") and result.get("step_ms") and result.get("flops_per_token") and result.get(
            "peak_flops"):
        result["mfu"] = result["flops_per_token"] * result["tok_s"] / result["peak_flops"]
    if name == "preset_4090":
        result["fits_24gb"] = result.get("exit_code") == 0 and result.get("peak_reserved_gib", 99) <= 24
        bad += ["does not fit under --memory_cap_gib=24"] * (not result["fits_24gb"] and not bad)
    if name in TRAIN_RUNS and not bad and result.get("exit_code") == 0 and "step_ms" not in result:
        bad.append("the run ended without the step lines to time it")
    result["failures"] = bad
    result["status"] = "stopped" if result.get("stopped") else "failed" if bad else "ok"
    return result


def write_reports(out, results, dry_run, scale):
    with open(os.path.join(out, "report.json.tmp"), "w") as f:
        json.dump(dict(dry_run=dry_run, budgets=BUDGETS, budget_scale=scale, stages=results), f, indent=1)
    os.replace(os.path.join(out, "report.json.tmp"), os.path.join(out, "report.json"))
    try:
        text = markdown(results, dry_run, scale)
    except Exception as e:  # a report that cannot be drawn must not cost the stages still to run
        text = f"report.md could not be drawn ({type(e).__name__}: {e}); report.json has every finding\n"
    with open(os.path.join(out, "report.md.tmp"), "w") as f:
        f.write(text)
    os.replace(os.path.join(out, "report.md.tmp"), os.path.join(out, "report.md"))


def markdown(results, dry_run, scale):
    env = results.get("env", {})
    fmt = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) else "n/a"
    lines = [f"### {'Dry run on the virtual H100 (values not real)' if dry_run else 'Measured'}: "
             f"{env.get('gpu', '?')}, {time.strftime('%Y-%m-%d')} (tools/gpu_check.py)", ""]
    if env.get("status") == "ok":
        lines += [f"torch {env['torch']}, Triton {env['triton']}, CUDA {env['cuda']}, driver {env['driver']}; "
                  f"{env['sms']} SMs, {env['memory_gib']:.1f} GiB, {env['shared_memory_optin']:,} B shared memory per "
                  f"block (opt-in); MLP kernel tiles forward {env['mlp_tiles']['forward']}, backward "
                  f"{env['mlp_tiles']['backward']} (BLOCK_M, N, K, stages, warps); FP8 head "
                  f"{'on' if env['fp8_head'] else 'off'}.", ""]
    lines += ["| stage | budget | took | status | findings |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['budget_s']:.0f} s | {r['seconds']:.0f} s | {r['status']} | "
                     f"{summary(name, r, fmt)} |")
    problems = [f"- {name}: {reason}" for name, r in results.items() for reason in
                r["failures"] + ([r["stopped"]] if r.get("stopped") else [])]
    lines += ["", *problems] if problems else []
    kernels = [k for name in ("mlp_kernel", "flex") for k in results.get(name, {}).get("kernels", [])]
    if kernels:
        lines += ["", "| kernel (as compiled) | shared memory | registers | spills |", "|---|---|---|---|"]
        lines += [f"| {k['name']} | {k['shared']:,} B | {k['registers']} | {k['spills']} |" for k in kernels]
    return "\n".join(lines) + "\n"


def summary(name, r, fmt):
    """One table cell of a stage's findings."""
    if name == "env":
        return f"{r.get('gpu', '?')}, capability {r.get('capability', '?')}"
    if name == "mlp_kernel" and "checks" in r:
        worst = max(e for c in r["checks"].values() for e in c["max_relative_error"].values())
        return (f"largest relative error {worst:.2g} over {', '.join(r['checks'])}; compiled: "
                f"{fmt(r.get('compiled_max_relative_error'), '.2g')}; NaN reaches the output: "
                f"{all(c['nan_reaches_output'] for c in r['checks'].values())}")
    if name == "fp8_head" and "errors" in r:
        grads = ", ".join(f"{g} cos {c:.4f} norm x{n:.3f}" for g, (c, n) in r["errors"]["grads"].items())
        return f"loss off by {r['errors']['loss']:.2g} (relative); {grads}"
    if name == "flex" and "errors" in r:
        return ", ".join(f"{k} {v:.2g}" for k, v in r["errors"].items()) + " (relative to the largest value)"
    if name in TRAIN_RUNS or name == "record_script":
        parts = [f"compile {fmt(r.get('compile_s'), '.0f')} s" if name in TRAIN_RUNS else
                 f"first step {fmt(r.get('compile_s'), '.0f')} s",
                 f"step {fmt(r.get('step_ms'), '.0f')} ms (steps {r.get('timed_steps', '?')})",
                 f"{fmt(r.get('tok_s'), ',.0f')} tok/s"]
        if "mfu" in r:
            parts.append(f"MFU {100 * r['mfu']:.1f}%")
        if "roofline_ms" in r:
            parts.append(f"virtual GPU's roofline {r['roofline_ms']:.0f} ms (measured/predicted "
                         f"{r['step_ms'] / r['roofline_ms']:.2f})")
        if "peak_allocated_gib" in r:
            parts.append(f"peak {r['peak_allocated_gib']:.1f} GiB allocated / {r['peak_reserved_gib']:.1f} reserved"
                         + (f" (virtual GPU: {r['predicted_peak_gib']:.1f}, measured/predicted "
                            f"{r['peak_allocated_gib'] / r['predicted_peak_gib']:.2f})" if "predicted_peak_gib" in r
                            else ""))
        parts += [f"train loss {fmt(r.get('train_loss'), '.4f')} at step {r.get('steps_done', '?')}"]
        parts += [] if math.isnan(r.get("val_loss", math.nan)) else [f"val loss {r['val_loss']:.4f}"]
        parts += [f"fits 24 GB: {r['fits_24gb']}"] if "fits_24gb" in r else []
        return "; ".join(parts)
    return ""


# -----------------------------------------------------------------------------
# Stages: each in its own process (torch and train_gpt.py imported there)


def emit(**findings):
    print(RESULT + json.dumps(findings), flush=True)


def watch_kernel_loads():
    """Every Triton kernel this process loads onto the GPU: name, shared memory, registers and spills, as
    compiled (Triton's own loader, and inductor's static launcher). -> the list it fills."""
    from torch._inductor.runtime import static_triton_launcher
    from triton.compiler import compiler
    loaded = []
    init_handles = compiler.CompiledKernel._init_handles
    load_kernel = static_triton_launcher.StaticallyLaunchedCudaKernel.load_kernel

    def note(name, shared, registers, spills):
        if not any(k["name"] == name and k["shared"] == shared for k in loaded):
            loaded.append(dict(name=name, shared=int(shared), registers=int(registers), spills=int(spills)))

    def watched_init(self):
        fresh = self.module is None
        init_handles(self)
        if fresh:
            note(self.name, self.metadata.shared, self.n_regs, self.n_spills)

    def watched_load(self, device):
        load_kernel(self, device)
        note(self.name, self.shared, self.n_regs, self.n_spills)
    compiler.CompiledKernel._init_handles = watched_init
    static_triton_launcher.StaticallyLaunchedCudaKernel.load_kernel = watched_load
    return loaded


def stage_env(tg, ctx):
    import torch
    import triton
    props = torch.cuda.get_device_properties(0)
    driver = "n/a"
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20).stdout.strip() or "n/a"
    except (OSError, subprocess.SubprocessError):
        pass
    optin = props.shared_memory_per_block_optin
    emit(gpu=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
         memory_gib=props.total_memory / 2**30, shared_memory_optin=optin, torch=torch.__version__,
         triton=triton.__version__, cuda=torch.version.cuda, driver=driver,
         mlp_tiles=dict(forward=tg.relu2_tiles(optin, True), backward=tg.relu2_tiles(optin, False)),
         fp8_head=tg.fp8_on("auto", torch.device("cuda")))


def stage_mlp_kernel(tg, ctx):
    import torch
    kernels = watch_kernel_loads()
    if ctx["dry_run"]:  # Triton's interpreter on CPU tensors; the record's shape would take minutes there
        virtual_gpu.gpu_like_interpreter()
        shapes, device = {"ragged 200 x 96": (200, 96)}, "cpu"
    else:
        shapes, device = {"record 49152 x 768": (49152, 768), "ragged 200 x 96": (200, 96)}, "cuda"
    checks = {}
    for label, (M, D) in shapes.items():
        checks[label] = virtual_gpu.mlp_kernel_check(tg, M, D, device)
        print(f"{label}: {json.dumps(checks[label])}", flush=True)
    emit(checks=checks, kernels=kernels)
    if ctx["dry_run"]:
        return
    args = tg.parse_args(RECORD_1231)  # the bf16 MLP of the 2025-12-31 preset, under torch.compile, fused vs not
    torch.manual_seed(0)
    fused = tg.MLP(args).cuda()
    torch.nn.init.normal_(fused.proj.weight, std=0.02)  # zero-initialised in training: no signal to compare
    unfused = tg.MLP(args).cuda()
    unfused.load_state_dict(fused.state_dict())
    unfused.fused = False
    x = torch.randn(1, 49152, 768, device="cuda").div(768 ** 0.5)
    grad = torch.randn_like(x)
    results = []
    for module, compiled in ((fused, torch.compile(fused)), (unfused, unfused)):
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", torch.bfloat16):
            y = compiled(xi)
        y.backward(grad)
        results.append([y, xi.grad, module.fc.grad, module.proj.weight.grad])
    names = ("output", "grad x", "grad fc", "grad proj")
    error = lambda a, b: ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
    errors = {name: error(a, b) for name, a, b in zip(names, *results)}
    emit(compiled_errors=errors, compiled_max_relative_error=max(errors.values()), kernels=kernels)


def stage_fp8_head(tg, ctx):
    import torch
    import torch.nn.functional as F
    device = "cpu" if ctx["dry_run"] else "cuda"  # torch._scaled_mm runs on the CPU too: real values
    N, D, V = (256, 768, 4096) if ctx["dry_run"] else (16384, 768, 50304)
    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(V, D, generator=gen) * 0.03).to(device)  # logits of std ~0.8, as a trained head gives
    xs = [F.rms_norm(torch.randn(N, D, generator=gen), (D,)).bfloat16().to(device) for _ in range(2)]
    targets = [torch.randint(0, V, (N,), generator=gen).to(device) for _ in range(2)]
    scale, B, cap = 0.5, 2, 30.0  # the loss scaled before backward; B sequences per micro-batch

    def run(fp8):
        wi, xi = w.clone().requires_grad_(), [x.clone().requires_grad_() for x in xs]
        losses = []
        for x, t in zip(xi, targets):  # two micro-batches, gradients accumulated
            if fp8:
                loss = tg.FP8HeadLoss.apply(x, wi, t, B, cap, "sigmoid")
            else:
                z = tg.softcap(x.float() @ wi.T, cap, "sigmoid")
                loss = F.cross_entropy(z, t, reduction="sum") / B
            (loss * scale).backward()
            losses.append(loss.item())
        return losses, [wi.grad, *(x.grad for x in xi)]
    (fp8_losses, fp8_grads), (ref_losses, ref_grads) = run(True), run(False)
    cosine = lambda a, b: F.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()
    grads = {name: (cosine(a, b), (a.float().norm() / b.float().norm()).item())
             for name, a, b in zip(("grad w", "grad x (batch 1)", "grad x (batch 2)"), fp8_grads, ref_grads)}
    loss_error = max(abs(a - b) / abs(b) for a, b in zip(fp8_losses, ref_losses))
    emit(errors=dict(loss=loss_error, grads=grads), losses=dict(fp8=fp8_losses, fp32=ref_losses), shape=[N, D, V])


def stage_flex(tg, ctx):
    import torch
    kernels = watch_kernel_loads()
    T, H, hd = 16384, 6, 128
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, tg.EOT, (1, T), generator=gen)
    idx[torch.rand(1, T, generator=gen) < 1 / 1500] = tg.EOT  # documents of ~1500 tokens
    idx = idx.cuda()
    windows = torch.tensor([14, 7], device="cuda")  # the record's last long and short windows, in blocks
    masks, dense = tg.build_masks(idx, windows), tg.build_masks(idx, windows, flex=False)
    qkv = [torch.randn(1, T, H, hd, generator=gen).cuda() for _ in range(3)]
    grad = torch.randn(1, T, H, hd, generator=gen).cuda()
    errors = {}
    error = lambda a, b: ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
    for window in "LS":
        results = []
        for mask, dtype in ((masks[window], torch.bfloat16), (dense[window], torch.float32)):
            q, k, v = (t.to(dtype, copy=True).requires_grad_() for t in qkv)
            y = tg.attention(q, k, v, mask, 0.12)
            y.backward(grad.to(dtype))
            results.append([y, q.grad, k.grad, v.grad])
        errors.update({f"{window} {name}": error(a, b) for name, a, b in zip(("out", "dq", "dk", "dv"), *results)})
    emit(errors=errors, shape=[1, T, H, hd], kernels=kernels, real=not ctx["dry_run"])


def stage_train(tg, ctx, name):
    """train_gpt.py's own run (main()), logging to the work folder, where the driver reads it."""
    import torch
    argv = [*TRAIN_RUNS[name], *ctx["data_args"], f"--run_id=gpucheck_{name}"]
    argv += ["--check_finite=false"] * ctx["dry_run"]
    args = tg.parse_args(argv)
    timed = range(TIMED_FROM, args.num_iterations)
    emit(gpu=torch.cuda.get_device_name(0), tokens_per_step=args.tokens_per_step,
         flops_per_token=sum(tg.flops_per_token(args, s) for s in timed) / len(timed),
         peak_flops=tg.peak_flops(torch.device("cuda")))
    if name != "record":  # step time, loss and memory are what is asked; validation's compile would cost ~25 s
        tg.evaluate = lambda *a, **k: (float("nan"), None)
    os.chdir(ctx["work"])
    tg.main(argv)


def stage_record_script(tg, ctx):
    """The 2025-12-31 record's own model and optimizers on the batches of our `record` stage, at its schedule of
    step 1001 on (window 7, the embedding tied as ours: no recompile), one untimed step first."""
    import torch
    import record as records
    args = tg.parse_args([*TRAIN_RUNS["record"], *ctx["data_args"]])
    stream = tg.TokenStream(args.train_files, tg.seq_len_at(0, args), args.micro_batch_seqs, args.seed,
                            args.align_to_doc, max_doc_len=args.max_doc_len)
    reference = os.path.join(ctx["data"], "reference")
    record = records.load("2025-12-31", cpu=False, reference=reference)
    if record is None:
        raise SystemExit(f"gpu_check: no record source in {reference} (copy it from ../shared/reference)")
    emit(gpu=torch.cuda.get_device_name(0))
    step = records.trainer(record, records.cuda_model(record, tg), compile=True)
    start = time.perf_counter()
    step(1000, records.loader_batches(torch.randint(0, 50257, (8, args.seq_len + 1), device="cuda")),
         say=lambda text: print(text, flush=True))  # where the first step's time goes, should it be stopped
    torch.cuda.synchronize()
    emit(compile_s=time.perf_counter() - start)
    losses = []
    for s in range(args.num_iterations):
        if s == TIMED_FROM:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        batch = tg.to_device(stream.next_step(args.tokens_per_step), torch.device("cuda"))  # as our run's batches
        losses.append(step(1001 + s, records.loader_batches(batch[:, 0])))
    torch.cuda.synchronize()
    step_ms = (time.perf_counter() - t0) * 1e3 / (args.num_iterations - TIMED_FROM)
    emit(step_ms=step_ms, timed_steps=f"{TIMED_FROM + 1}-{args.num_iterations}", steps_done=args.num_iterations,
         tok_s=args.tokens_per_step / step_ms * 1e3, train_loss=losses[-1].item() / args.tokens_per_step,
         peak_allocated_gib=torch.cuda.max_memory_allocated() / 2**30,
         peak_reserved_gib=torch.cuda.max_memory_reserved() / 2**30)


def stage(argv):
    options = dict(arg[2:].split("=", 1) if "=" in arg else (arg[2:], "1") for arg in argv)
    import importlib.util
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA GPU here; use --dry-run for the virtual one")
    spec = importlib.util.spec_from_file_location("train_gpt", options["train_gpt"])
    tg = importlib.util.module_from_spec(spec)
    sys.modules["train_gpt"] = tg
    spec.loader.exec_module(tg)
    proxy = os.path.join(options["data"], "proxy")
    ctx = dict(dry_run="dry-run" in options, data=options["data"], work=options["work"],
               data_args=[f"--train_files={proxy}/wiki_train_*.bin", f"--val_files={proxy}/wiki_val_*.bin"])
    name = options["stage"]
    if name in TRAIN_RUNS:
        return stage_train(tg, ctx, name)
    return globals()[f"stage_{name}"](tg, ctx)


if __name__ == "__main__":
    if any(arg.startswith("--stage=") for arg in sys.argv[1:]):
        sys.exit(stage(sys.argv[1:]))
    sys.exit(main(sys.argv[1:]))
