"""Virtual GPU: train_gpt.py's CUDA path, checked on a machine without a GPU.

    python tools/virtual_gpu.py setup                         # .venv-cuda: a CUDA build of torch (~4.7 GB)
    python tools/virtual_gpu.py check --preset=record --gpu=h100
    python tools/virtual_gpu.py kernels                       # level 0 alone, seconds
    python tools/virtual_gpu.py fake --preset=4090 --gpu=4090  # level 1 alone, seconds
    python tools/virtual_gpu.py run --preset=4090 --gpu=4090   # levels 2 and 3, minutes
    python tools/virtual_gpu.py report --preset=record --gpu=h100   # one step of ours beside the record's script
    python tools/virtual_gpu.py report --preset=4090 --gpu=5090     # ours alone, and its whole run's estimate
Other --field=value arguments go to train_gpt.py; --steps=N sets the null-GPU run's length (default 3).

Four levels, each catching what the one before cannot:
0. kernels: train_gpt.py's own Triton kernel (the fused ReLU² MLP) computed by Triton's interpreter on the CPU,
   forward and backward, against the unfused torch ops: the one level that checks values.
1. fake step: one training step of train_gpt.py's own code on fake CUDA tensors (torch's FakeTensorMode):
   autocast's CUDA dtypes, FlexAttention with the BlockMask, the FP8 head through torch._scaled_mm, backward,
   Muon, fused Adam and the schedules, with every rule the meta kernels enforce (e.g. _scaled_mm's column-major
   second operand). Reports the attention inputs' dtypes and the eager peak of live bytes.
2. compile: train_gpt.py's own training loop under torch.compile with inductor, which writes the Triton kernels
   for the GPU's compute capability and runs ptxas on them. A kernel that asks for more shared memory per block
   than the GPU has fails the run, named. Reports graphs, Triton kernels and extern calls; the window schedule
   and validation must add no graph beyond the training one and the validation one.
3. null GPU: that run executes on a device whose memory is address space and whose kernels return at once
   (tools/vgpu_stub.c, built with cc into .vgpu/): the caching allocator's peak and the kernel launches per
   optimizer step are those of the real program; the values it computes are not (check_finite is off).
Beyond level 0 it cannot tell speed, numerics, whether an inductor kernel computes the right thing, or anything
about NCCL.

report: what one optimizer step asks of the GPU (the run's last step): kernel launches, the FLOPs of the cuBLAS
matmuls (counted by the stand-in) and of train_gpt.py's Triton matmul, the bytes the generated kernels read and
write (inductor's estimate per kernel, added up per launch; eager aten kernels are not counted; a matmul's own
operands are not counted, cuBLAS's or ours, but what our matmul's epilogue adds is), the allocator's peak in the
step, a roofline time and from it an estimate of the whole run's time; for a record's preset (record, 2026-07-17,
2025-12-31, 2025-08-23) also that record's own model and optimizers (tools/record.py) the same way.
The GPUs' attributes (compute capability, SMs, shared memory, memory size) are in tools/vgpu_stub.c with sources.
"""
import contextlib
import ctypes
import glob
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import warnings
import weakref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, ".vgpu")
VENV = os.path.join(ROOT, ".venv-cuda")
STUB = os.path.join(ROOT, "tools", "vgpu_stub.c")
REQUIREMENTS = os.path.join(ROOT, "tools", "requirements-cuda.txt")
GPUS = ("h100", "4090", "5090")
REPORT_PREFIX = "vgpu-report: "

# -----------------------------------------------------------------------------
# Outer process (any Python, no torch): build the stand-in, then run the inner process in the CUDA venv


def cuda_python():
    """The interpreter of a CUDA build of torch: $VGPU_PYTHON, else .venv-cuda's; None if there is none (also
    when a failed setup left a venv without one)."""
    path = os.environ.get("VGPU_PYTHON") or os.path.join(VENV, "bin", "python")
    has_cuda_torch = "import sys, torch; sys.exit(torch.version.cuda is None)"
    if os.path.exists(path) and subprocess.run([path, "-c", has_cuda_torch], capture_output=True).returncode == 0:
        return path
    return None


def site_packages(python):
    return subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def cuda_headers(site):
    """cuda.h and driver_types.h of the CUDA version the torch build was made with (its nvidia-* wheels)."""
    found = sorted(glob.glob(os.path.join(site, "nvidia", "*", "include", "cuda.h")) +
                   glob.glob(os.path.join(site, "nvidia", "cuda_runtime", "include", "cuda.h")))
    if not found:
        raise SystemExit(f"virtual_gpu: no CUDA headers (nvidia/*/include/cuda.h) under {site}")
    return os.path.dirname(found[-1])


def build_stub(site):
    """Compile tools/vgpu_stub.c into .vgpu/libcuda.so.1 (again when the source or headers change)."""
    include = cuda_headers(site)
    with open(STUB, "rb") as f:
        key = hashlib.sha256(f.read() + include.encode()).hexdigest()[:16]
    lib = os.path.join(BUILD, "libcuda.so.1")
    stamp = os.path.join(BUILD, "stamp")
    if os.path.exists(lib) and os.path.exists(stamp) and open(stamp).read() == key:
        return lib
    shim = os.path.join(BUILD, "shim", "crt")
    os.makedirs(shim, exist_ok=True)
    with open(os.path.join(shim, "host_defines.h"), "w") as f:  # what driver_types.h needs of the toolkit's
        f.write("#define __device_builtin__\n#define CUDARTAPI\n#define __host__\n"
                "#define __align__(n) __attribute__((aligned(n)))\n"
                "#define __builtin_align__(n) __attribute__((aligned(n)))\n")
    cc = os.environ.get("CC", "cc")
    cmd = [cc, "-O2", "-shared", "-fPIC", "-Wall", "-Werror", f"-I{os.path.dirname(shim)}", f"-I{include}",
           "-Wl,-soname,libcuda.so.1", "-o", lib + ".tmp", STUB, "-ldl", "-lpthread"]
    subprocess.run(cmd, check=True)
    os.replace(lib + ".tmp", lib)
    with contextlib.suppress(FileExistsError):
        os.symlink("libcuda.so.1", os.path.join(BUILD, "libcuda.so"))  # Triton links its launcher with -lcuda
    with open(stamp, "w") as f:
        f.write(key)
    return lib


def write_ptxas_wrapper():
    """.vgpu/ptxas: Triton's ptxas through this file's `ptxas` command, which logs each run's peak memory."""
    path = os.path.join(BUILD, "ptxas")
    with open(path + ".tmp", "w") as f:
        f.write(f'#!/bin/sh\nexec "{sys.executable}" "{os.path.abspath(__file__)}" ptxas "$@"\n')
    os.chmod(path + ".tmp", 0o755)
    os.replace(path + ".tmp", path)
    return path


def ptxas(argv):
    """Run the real ptxas ($VGPU_REAL_PTXAS) and append 'peak_kib seconds kernel' to $VGPU_PTXAS_LOG."""
    start = time.perf_counter()
    code = subprocess.run([os.environ["VGPU_REAL_PTXAS"], *argv]).returncode
    ptx = next((a for a in argv if a.endswith(".ptx")), None)
    if ptx is None:  # Triton asking for the version
        return code
    found = re.search(r"\.entry (\w+)", open(ptx).read()) if os.path.exists(ptx) else None
    kernel = found[1] if found else "?"
    with open(os.environ["VGPU_PTXAS_LOG"], "a") as f:
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        f.write(f"{peak_kib} {time.perf_counter() - start:.2f} {kernel}\n")
    return code


def setup():
    """Create .venv-cuda with the CUDA build of torch pinned in tools/requirements-cuda.txt, then build."""
    if not os.path.exists(os.path.join(VENV, "bin", "python")):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([os.path.join(VENV, "bin", "python"), "-m", "pip", "install", "-q", "-r", REQUIREMENTS], check=True)
    print(f"virtual_gpu: stand-in built at {build_stub(site_packages(os.path.join(VENV, 'bin', 'python')))}")


def environment(gpu):
    """-> (python, environment variables) of a process that sees the null GPU of kind `gpu`: the CUDA build's
    interpreter with the stand-in built and preloaded (also for tools/gpu_check.py --dry-run)."""
    python = cuda_python()
    if python is None:
        raise SystemExit("virtual_gpu: no CUDA build of torch; run `python tools/virtual_gpu.py setup` "
                         "(or set VGPU_PYTHON to a Python that has one)")
    if gpu not in GPUS:
        raise SystemExit(f"virtual_gpu: --gpu={gpu!r} is not one of {', '.join(GPUS)}")
    site = site_packages(python)
    lib = build_stub(site)
    return python, dict(os.environ, LD_PRELOAD=lib, VGPU_GPU=gpu, TRITON_LIBCUDA_PATH=BUILD, VGPU_INNER="1",
                        LD_LIBRARY_PATH=os.pathsep.join([BUILD, os.environ.get("LD_LIBRARY_PATH", "")]),
                        TRITON_PTXAS_PATH=write_ptxas_wrapper(),
                        VGPU_REAL_PTXAS=os.path.join(site, "triton", "backends", "nvidia", "bin", "ptxas"))


def main(argv):
    if not argv or argv[0] not in ("setup", "check", "kernels", "fake", "run", "report"):
        raise SystemExit(__doc__)
    if argv[0] == "setup":
        return setup()
    gpu = next((a.split("=", 1)[1] for a in argv if a.startswith("--gpu=")), "h100")
    python, env = environment(gpu)
    levels = {"check": ["kernels", "fake", "run"], "report": ["run", "record"]}.get(argv[0], [argv[0]])
    if argv[0] == "report" and not (record_date(argv[1:]) in SCRIPTS_ON_GPU and os.path.isdir(REFERENCE)):
        levels = ["run"]  # a record's own script goes beside its preset only (2026-07-17's not yet: README)
    codes, reports = [], []
    for level in levels:  # each in a process of its own
        with tempfile.TemporaryDirectory(prefix="vgpu-cache-") as cache:
            cache = os.environ.get("VGPU_CACHE", cache)  # a cold cache by default: compile times as on a first run
            env.update(TRITON_INTERPRET="1" if level == "kernels" else "0", TORCHINDUCTOR_CACHE_DIR=cache,
                       TRITON_CACHE_DIR=os.path.join(cache, "triton"),
                       VGPU_PTXAS_LOG=os.path.join(cache, f"ptxas-{level}.log"))
            inner = subprocess.Popen([python, os.path.abspath(__file__), level, *argv[1:]], env=env,
                                     stdout=subprocess.PIPE, text=True)
            for line in inner.stdout:
                print(line, end="", flush=True)
                if line.startswith(REPORT_PREFIX):
                    reports.append(json.loads(line[len(REPORT_PREFIX):]))
            codes.append(inner.wait())
    if argv[0] == "report" and max(codes) == 0:
        print(report_table(reports, gpu))
    return max(codes)


REFERENCE = os.path.join(os.path.dirname(ROOT), "shared", "reference")  # the records' sources (tools/record.py)
SCRIPTS_ON_GPU = ("2025-08-23", "2025-12-31", "2026-07-17")  # tools/record.py loads these for a GPU
# Dense bf16 FLOP/s and memory bytes/s: NVIDIA H100 SXM5 datasheet (989.4 TFLOPS, 3.35 TB/s HBM3); H200 datasheet
# (the H100's 989.4 TFLOPS, 4.8 TB/s HBM3e; a real GPU tools/gpu_check.py may be lent); Ada whitepaper, RTX 4090
# (165.2 TFLOPS bf16 with fp32 accumulation, 1008 GB/s GDDR6X); RTX Blackwell whitepaper, RTX 5090 (209.5 TFLOPS
# bf16 with fp32 accumulation, 1792 GB/s GDDR7)
GPU_PEAKS = {"h100": (989.4e12, 3.35e12), "h200": (989.4e12, 4.8e12), "4090": (165.2e12, 1.008e12),
             "5090": (209.5e12, 1.792e12)}
# as issue 23 cites them, time to val loss 3.28: 2026-07-17's code with 8-step accumulation on one H100 (10 runs),
# a fork on one RTX 5090 (2 runs, sampled softmax and FP8 MLP backward), the one-4090 script (to 3.286)
PUBLISHED_ONE_GPU = "H100, 2026-07-17's code: ~595 s; RTX 5090 fork: 1,093 s; RTX 4090 script: ~115 min"
# assumed: cuBLAS at these shapes reaches ~60% of the tensor-core peak, a memory-bound kernel ~80% of bandwidth
MATMUL_EFFICIENCY, MEMORY_EFFICIENCY = 0.6, 0.8


def roofline_ms(flops, kernel_bytes, gpu):
    """A step's time if its FLOPs ran at MATMUL_EFFICIENCY of the GPU's peak and its kernel bytes moved at
    MEMORY_EFFICIENCY of its bandwidth, one after the other."""
    peak, bandwidth = GPU_PEAKS[gpu]
    return 1000 * (flops / (peak * MATMUL_EFFICIENCY) + kernel_bytes / (bandwidth * MEMORY_EFFICIENCY))


def record_date(train_args):
    """The record whose math the arguments are (a record preset, nothing else changed) -> its date, or None."""
    presets = [a.split("=", 1)[1] for a in train_args if a.startswith("--preset=")]
    dates = {(): "2025-08-23", ("2025-08-23",): "2025-08-23", ("2025-12-31",): "2025-12-31",
             ("2026-07-17",): "2026-07-17", ("record",): "2026-07-17"}  # as train_gpt.PRESETS names them
    changed = any(a.startswith("--") and not a.startswith(("--preset", "--gpu", "--steps")) for a in train_args)
    return None if changed else dates.get(tuple(presets))


COUNTED_RANKS = 8  # the records' 8xH100


def ring_bytes(sent, ranks=COUNTED_RANKS):
    """What each GPU sends for these collectives' tensors (bytes by kind) with ring algorithms."""
    return (ranks - 1) / ranks * (2 * sent["all_reduce"] + sent["reduce_scatter"] + sent["all_gather"]) + sent[
        "all_to_all"]  # all-to-all: what each rank sends, its own rows left out


def report_table(reports, gpu):
    """One optimizer step of ours (and of the record's own script), as markdown, with a roofline time."""
    runs = [r for r in reports if r["level"] in ("run", "record")]
    ours = next(r for r in runs if r["level"] == "run")
    flops = ours["model_flops_per_step"]  # the same math for both
    steps = ours["run_steps"] * ours["run_step_fraction"]  # the whole run in steps of this one's tokens
    peak, bandwidth = GPU_PEAKS[gpu]
    rows = [("model FLOPs, fwd+bwd (analytic, the same math)", lambda r: f"{flops:.3g}"),
            ("matmul FLOPs counted: cuBLAS + train_gpt.py's Triton",
             lambda r: f"{r['last_step']['blas_flops']:.3g} + {r['last_step'].get('fused_flops', 0):.3g}"),
            ("bytes of generated kernels (inductor's count; fused matmuls: their epilogues')",
             lambda r: f"{r['last_step']['kernel_bytes']:.3g}"),
            ("kernel launches: aten / Triton / cuBLAS",
             lambda r: "{aten} / {triton} / {blas}".format(**r["last_step"])),
            ("allocator peak in the step (GiB)", lambda r: f"{r['last_step']['peak_allocated_gib']:.1f}"),
            (f"roofline (ms): FLOPs at {MATMUL_EFFICIENCY:.0%} of {peak / 1e12:.0f} TFLOP/s + bytes at "
             f"{MEMORY_EFFICIENCY:.0%} of {bandwidth / 1e12:.2f} TB/s",
             lambda r: f"{roofline_ms(flops, r['last_step']['kernel_bytes'], gpu):.1f}"),
            (f"ESTIMATE, not measured: training time (s), the roofline times {ours['run_steps']} steps of"
             f" {ours['run_step_fraction']:.2f} of this step's tokens (the preset's batch schedule). Published on"
             f" one GPU ({PUBLISHED_ONE_GPU})",
             lambda r: f"{roofline_ms(flops, r['last_step']['kernel_bytes'], gpu) * steps / 1000:.0f}"),
            (f"communication at {COUNTED_RANKS} GPUs, MB per step: all-reduce / reduce-scatter / all-gather /"
             " all-to-all (each collective's whole tensor; mean of a step with Adam and one without)",
             lambda r: "{all_reduce:.0f} / {reduce_scatter:.0f} / {all_gather:.0f} / {all_to_all:.0f}".format(
                 **{k: v / 1e6 for k, v in r["communication"].items()})),
            ("each GPU sends, MB per step (a ring: all-reduce 2(N-1)/N of its tensor, the others (N-1)/N;"
             " all-to-all: its input)",
             lambda r: f"{ring_bytes(r['communication']) / 1e6:.0f}")]
    names = {"run": "train_gpt.py"}
    lines = [f"| one optimizer step on the virtual {gpu} | "
             + " | ".join(names.get(r["level"], f"record {r.get('date')} (its script)") for r in runs) + " |",
             "|---" * (len(runs) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(value(r) for r in runs) + " |" for label, value in rows]
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# Inner process: torch with the stand-in loaded (LD_PRELOAD), so torch sees one GPU of the chosen kind


KERNEL_BYTES = {}  # kernel -> bytes its launches so far read and wrote, by inductor's count
FUSED_FLOPS = [0]  # FLOPs of train_gpt.py's own Triton matmuls so far (the stand-in counts cuBLAS's)


def counters():
    """Launches, cuBLAS FLOPs and the largest shared-memory request (the stand-in's), kernel bytes (inductor's)."""
    out, name = (ctypes.c_longlong * 6)(), ctypes.create_string_buffer(256)
    ctypes.CDLL("libcuda.so.1").vgpu_counters(out, name, 256)
    return dict(aten=out[0], triton=out[1], blas=out[2], copies=out[3], max_shared=out[4], blas_flops=out[5],
                fused_flops=FUSED_FLOPS[0], kernel_bytes=sum(KERNEL_BYTES.values()),
                max_shared_kernel=name.value.decode())


def count_kernel_bytes():
    """Have inductor estimate each kernel's bytes as it writes it (benchmark_kernel) and add them up per launch."""
    import torch._inductor.config as inductor_config
    from torch._inductor.runtime import triton_heuristics
    inductor_config.benchmark_kernel = True
    run = triton_heuristics.CachingAutotuner.run

    def counted(self, *args, **kwargs):
        name = self.inductor_meta.get("kernel_name") or getattr(self.fn, "__name__", "?")
        KERNEL_BYTES[name] = KERNEL_BYTES.get(name, 0) + (self.inductor_meta.get("kernel_num_gb") or 0) * 1e9
        return run(self, *args, **kwargs)
    triton_heuristics.CachingAutotuner.run = counted


def count_fused_matmuls(tg):
    """train_gpt.py's ReLU² matmul kernel, counted as a cuBLAS matmul is (its FLOPs; a matmul's own operands and
    result are not in the bytes, cuBLAS's are not either) plus what its epilogue adds: writing relu(pre)²
    forward, reading pre backward (bf16, M x N each)."""
    launch = tg.launch_mm_relu2

    def counted(a, b, aux=None, **options):
        FUSED_FLOPS[0] += 2 * a.size(0) * a.size(1) * b.size(1)
        KERNEL_BYTES["mm_relu2 epilogue"] = KERNEL_BYTES.get("mm_relu2 epilogue", 0) + 2 * a.size(0) * b.size(1)
        return launch(a, b, aux, **options)
    tg.launch_mm_relu2 = counted


class StepMeter:
    """What one optimizer step asks of the GPU: launches, cuBLAS FLOPs, kernel bytes, the allocator's peak."""

    def __init__(self):
        self.steps = []

    def __enter__(self):
        import torch
        torch.cuda.reset_peak_memory_stats()
        self.before, self.kernels = counters(), dict(KERNEL_BYTES)
        return self

    def __exit__(self, *exc):
        import torch
        after = counters()
        self.steps.append({key: after[key] - self.before[key] for key in
                           ("aten", "triton", "blas", "blas_flops", "fused_flops", "kernel_bytes")})
        self.steps[-1]["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        spent = {k: v - self.kernels.get(k, 0) for k, v in KERNEL_BYTES.items()}
        self.steps[-1]["top_kernels"] = sorted(spent.items(), key=lambda kv: -kv[1])[:8]  # by bytes


def fake_step(tg, argv):
    """Level 1: one training step of train_gpt.py's code on fake CUDA tensors; -> report dict."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
    from torch.utils._python_dispatch import TorchDispatchMode

    args = tg.parse_args(argv)
    device = torch.device("cuda")
    seen = []  # (q, k, v dtypes, mask kind) of every attention call
    attention = tg.attention

    def watched_attention(q, k, v, mask, scale):
        seen.append(([str(t.dtype) for t in (q, k, v)], type(mask).__name__))
        return attention(q, k, v, mask, scale)
    tg.attention = watched_attention
    tg.compiled_flex_attention = lambda: flex_attention  # eager flex on fake tensors: its fake kernel, no compile

    class LiveBytes(TorchDispatchMode):
        """Live bytes of CUDA storages: + when an op creates one, - when its last tensor dies; peak kept. Also
        counts the FP8 matmuls (torch._scaled_mm)."""
        supports_higher_order_operators = True  # flex_attention is a higher-order op

        def __init__(self):
            super().__init__()
            self.live, self.peak, self.refs, self.fp8_calls = 0, 0, {}, 0

        def track(self, t):
            if not isinstance(t, torch.Tensor) or t.device.type != "cuda":
                return
            key = t.untyped_storage()._cdata
            if key not in self.refs:
                self.refs[key] = [0, t.untyped_storage().nbytes()]
                self.live += self.refs[key][1]
                self.peak = max(self.peak, self.live)
            self.refs[key][0] += 1
            weakref.finalize(t, self.release, key)

        def release(self, key):
            entry = self.refs[key]
            entry[0] -= 1
            if entry[0] == 0:
                self.live -= entry[1]
                del self.refs[key]

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.fp8_calls += func is torch.ops.aten._scaled_mm.default
            out = func(*args, **(kwargs or {}))
            for t in torch.utils._pytree.tree_leaves(out):
                self.track(t)
            return out

    with torch.device("meta"):
        model = tg.GPT(args)
    start = time.perf_counter()
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        model = model.to_empty(device=device)
        tg.set_fp8(model, args, device)
        muon, adam = tg.build_optimizers(model, args)
        last = args.num_iterations - 1  # a batch schedule's last stage: its longest sequences
        T = tg.seq_len_at(last, args)
        accum = tg.grad_accum_steps(tg.tokens_per_step_at(last, args), 1, args.micro_batch_seqs * T)
        batch = torch.zeros(1, args.micro_batch_seqs, T + 1, dtype=torch.long, device=device)
    windows = tg.apply_schedules(0, args, model, muon, adam)  # outside: pinned host memory is not fakeable
    with fake, LiveBytes() as live:
        for t in [*model.parameters(), *model.buffers()]:
            live.track(t)
        loss = tg.train_step(model, model, batch, windows, muon, adam, check_grads=True)
        assert loss.device.type == "cuda"
    with fake, LiveBytes() as live_eval, torch.no_grad():  # one validation micro-batch as evaluate() runs it
        for t in [*model.parameters(), *model.buffers(),
                  *(t for opt in (muon, adam) for state in opt.state.values() for t in state.values())]:
            live_eval.track(t)
        model.eval()
        rows = max(1, args.micro_batch_seqs * T // args.val_seq_len)
        val = torch.zeros(rows, args.val_seq_len + 1, dtype=torch.long, device=device)
        model(val[:, :-1], val[:, 1:], windows)
    bf16 = all(dtypes == ["torch.bfloat16"] * 3 and kind == BlockMask.__name__ for dtypes, kind in seen)
    return dict(level="fake", attention_calls=len(seen), attention_inputs=seen[0] if seen else None,
                attention_bf16_blockmask=bf16, fp8_head=model.use_fp8, fp8_calls=live.fp8_calls,
                fp8_mlp=any(block.mlp is not None and block.mlp.fp8 for block in model.blocks),
                micro_batches_per_step=accum,
                eager_peak_gib=live.peak / 2**30, eager_eval_peak_gib=live_eval.peak / 2**30,
                memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30,
                seconds=time.perf_counter() - start)


def synthetic_shards(tg, folder, args, steps):
    """Random GPT-2 tokens with a document start every ~700 tokens: enough for `steps` steps and one val seq."""
    import numpy as np
    rng = np.random.default_rng(0)
    for name, n in (("vgpu_train_000001.bin", steps * args.tokens_per_step + 4 * args.seq_len),
                    ("vgpu_val_000000.bin", args.val_seq_len + 1)):
        tokens = rng.integers(0, tg.EOT, n)
        tokens[rng.random(n) < 1 / 700] = tg.EOT
        tg.write_shard(os.path.join(folder, name), tokens)
    return [f"--train_files={folder}/vgpu_train_*.bin", f"--val_files={folder}/vgpu_val_*.bin",
            f"--val_tokens={args.val_seq_len}"]


def generated_code():
    """(graphs, Triton kernels, extern kernel calls) in the modules inductor wrote this run."""
    from torch._inductor.codecache import PyCodeCache
    modules = list(PyCodeCache.modules)
    sources = [open(m.__file__).read() for m in modules if getattr(m, "__file__", None)]
    graphs = [s for s in sources if "def call(" in s]
    return (len(graphs), sum(s.count("async_compile.triton(") for s in graphs),
            sum(len(re.findall(r"\bextern_kernels\.\w+\(", s)) for s in graphs))


def null_gpu_run(tg, argv, steps):
    """Levels 2 and 3: train_gpt.py's own run (compile, warmup, steps, validation) on the null GPU."""
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters as dynamo_counters

    full = tg.parse_args(argv)
    stages = tg.parse_batch_schedule(full)
    run_tokens = sum(tg.tokens_per_step_at(step, full) for step in range(full.num_iterations))  # the whole run's
    # a short run: a batch schedule's last stage throughout (its longest sequences), no extension steps
    argv = [*argv, f"--tokens_per_step={stages[-1][1]}", "--batch_schedule=", "--extension_steps=0"]
    args = tg.parse_args(argv)
    count_kernel_bytes()
    count_fused_matmuls(tg)
    meter, train_step = StepMeter(), tg.train_step

    def watched_step(*a, **k):
        with meter:
            return train_step(*a, **k)
    tg.train_step = watched_step
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        run = [*argv, *synthetic_shards(tg, work, args, steps), f"--num_iterations={steps}",
               f"--val_loss_every={steps}", "--train_log_every=1", "--warmup_steps=1", "--save_checkpoint=false",
               "--check_finite=false", "--run_id=vgpu"]
        cwd = os.getcwd()
        os.chdir(work)
        try:
            tg.main(run)
        finally:
            os.chdir(cwd)
        log = open(os.path.join(work, "logs", "vgpu.txt")).read()
    warmup = re.search(r"^warmup: .* took ([\d.]+)s", log, re.M)
    graphs, triton_kernels, extern_calls = generated_code()
    stub = counters()
    return dict(level="run", steps=steps, seconds=time.perf_counter() - start,
                compile_seconds=float(warmup[1]) if warmup else None,
                dynamo_graphs=dynamo_counters["stats"]["unique_graphs"], expected_graphs=2,
                inductor_graphs=graphs,
                triton_kernels=triton_kernels, extern_calls=extern_calls,
                max_shared_bytes=stub["max_shared"], max_shared_kernel=stub["max_shared_kernel"],
                last_step=meter.steps[-1], model_flops_per_step=tg.flops_per_token(args) * args.tokens_per_step,
                run_steps=full.num_iterations,
                run_step_fraction=run_tokens / full.num_iterations / args.tokens_per_step,
                peak_allocated_gib=torch.cuda.max_memory_allocated() / 2**30,
                peak_reserved_gib=torch.cuda.max_memory_reserved() / 2**30,
                fp8_head="fp8_head: True" in log, communication=our_communication(tg, args))


def our_communication(tg, args, device="cuda"):
    """The collectives of our optimizer step as rank 0 of COUNTED_RANKS sees them (tools/record.py's Counting),
    bytes by kind, the mean of a step where Adam steps and one where it holds; the embedding untied, so every
    parameter has a gradient (their values do not change the bytes: a sum of every weight stands in for the
    model's loss)."""
    import torch
    import record as records
    counting, real = records.Counting(COUNTED_RANKS), tg.dist
    tg.dist = counting
    try:
        model = tg.build_model(args, torch.device(device))
        model.embed_tied = False
        muon, adam = tg.build_optimizers(model, args, 0, COUNTED_RANKS)
        everything = lambda *a: sum(p.float().sum() for p in model.parameters())
        for adam_steps in (True, False):
            tg.train_step(everything, model, torch.zeros(1, 1, 2, dtype=torch.long, device=device), None, muon,
                          adam, adam_steps=adam_steps)
    finally:
        tg.dist = real
    return {kind: sent / 2 for kind, sent in counting.sent.items()}


def record_communication(records, record, tg, index):
    """The record's collectives as our_communication counts ours: its model and optimizers built again as rank 0
    of COUNTED_RANKS builds them (one micro-batch a step, 8 // world_size), steps index (its Adams' step) and
    index + 1."""
    import torch
    saved = {name: record.get(name) for name in ("dist", "world_size", "grad_accum_steps")}
    counting = records.Counting(COUNTED_RANKS)
    record.update(dist=counting, world_size=COUNTED_RANKS, grad_accum_steps=1)
    try:
        model = records.cuda_model(record, tg)
        params = list(model.parameters())
        step = records.trainer(record, model, forward=lambda *a: sum(p.float().sum() for p in params))
        tokens = torch.zeros(2049, dtype=torch.long, device="cuda")
        batch = lambda: [tokens]
        if record["record_date"] == "2025-12-31":
            model.split_embed = True  # untied, as ours
            batch = lambda: records.loader_batches([tokens])
        elif record["record_date"] == "2026-07-17":  # its sparse bigram exchange sends the rows that a rank's
            # tokens hit since its last Adam step: random tokens, a micro-batch of its last stage's size a step
            batch = lambda: [records.loader_batch_2026_07_17(record, torch.randint(0, 50257, (48 * 1024 + 1,)))]
        for i in (index, index + 1):
            step(i, batch())
    finally:
        record.update(saved)
    return {kind: sent / 2 for kind, sent in counting.sent.items()}


def record_run(tg, date, steps):
    """The record's own model and optimizers (tools/record.py) on the null GPU, as its script trains them on one
    GPU (8 micro-batches a step of its last batch size: 48K-token sequences; its compile settings; records
    2025-12-31's and 2026-07-17's FlashAttention-3 calls computed by our FlexAttention call, the same documents and
    windows; 2026-07-17's own Triton kernels and CUDA cross-entropy), for
    `steps` steps after one that compiles, the embedding tied as in our run's steps; then its collectives at
    COUNTED_RANKS GPUs. Its data loader is not run: random tokens, which the null GPU never reads."""
    import torch
    import record as records
    record = records.load(date, cpu=False)
    if record is None:
        raise SystemExit("virtual_gpu: ../shared/reference is absent: no record to run")
    count_kernel_bytes()
    step = records.trainer(record, records.cuda_model(record, tg), compile=True)
    if date == "2025-12-31":  # step 1190 each time: its last batch stage and window 11 (as our run's last step),
        index = 1190  # the embedding tied (until 1191), Adam holding (odd steps only): our last step, for odd --steps
        tokens = lambda: torch.randint(0, 50257, (48 * 1024 + 1,), device="cuda")
        batch = lambda: records.loader_batches(tokens() for _ in range(8))
    elif date == "2026-07-17":  # step 1375: its last batch stage (8 micro-batches of 48K tokens), windows (5, 11)
        index = 1375
        batch = lambda: [records.loader_batch_2026_07_17(record, torch.randint(0, 50257, (48 * 1024 + 1,)))
                         for _ in range(8)]
    else:
        index, seq_len = 1000, record["args"].train_seq_len
        batch = lambda: [torch.randint(0, 50257, (seq_len + 1,), device="cuda") for _ in range(8)]
    meter, start = StepMeter(), time.perf_counter()
    for _ in range(steps + 1):
        with meter:
            step(index, batch())
    peaks = dict(peak_allocated_gib=torch.cuda.max_memory_allocated() / 2**30,
                 peak_reserved_gib=torch.cuda.max_memory_reserved() / 2**30)
    return dict(level="record", date=date, steps=steps, seconds=time.perf_counter() - start,
                last_step=meter.steps[-1], communication=record_communication(records, record, tg, index + 1), **peaks)


def gpu_like_interpreter():
    """Fill three gaps of Triton's interpreter (TRITON_INTERPRET=1) so that it computes as a GPU does: its tl.dot
    multiplies bf16's raw bits; its fp32 -> bf16 cast truncates where GPUs round to nearest even; its maxnum
    (tl.maximum's default, PropagateNan.NONE) keeps NaN, where the GPU's max.f32 returns the other operand."""
    import numpy as np
    import torch
    import triton.language as tl
    from triton.runtime import interpreter
    builder = interpreter.InterpreterBuilder
    dot, cast = builder.create_dot, builder.cast_impl

    def widen(h):
        if h.dtype.scalar != tl.bfloat16:
            return h
        return interpreter.TensorHandle((h.data.astype(np.uint32) << 16).view(np.float32), tl.float32)

    def rounded_cast(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            bits = torch.from_numpy(np.ascontiguousarray(src.data)).bfloat16().view(torch.int16).numpy()
            return interpreter.TensorHandle(bits.view(np.uint16), tl.bfloat16)
        return cast(self, src, dst_type)
    builder.create_dot = lambda self, a, b, d, *rest: dot(self, widen(a), widen(b), d, *rest)
    builder.cast_impl = rounded_cast
    builder.create_maxnumf = lambda self, lhs, rhs: self.binary_op(lhs, rhs, np.fmax)


def interpret_kernels(tg):
    """Level 0: train_gpt.py's own Triton kernel (the ReLU² MLP), run by Triton's interpreter on CPU tensors
    (TRITON_INTERPRET=1, made to compute as a GPU does: gpu_like_interpreter) against the unfused torch ops:
    mlp_kernel_check at 200 rows x 96 (one full and one partial 128-row tile; one and a half 64-wide K tiles)."""
    gpu_like_interpreter()
    return dict(level="kernels", **mlp_kernel_check(tg, 200, 96, "cpu"))


def mlp_kernel_check(tg, M, D, device, shared_memories=(101_376, 232_448), seed=0):
    """train_gpt.py's ReLU² MLP kernel against the unfused torch ops it replaces, x (M, D), hidden 4D, bf16: each
    way with the tiles for each shared-memory size (a 4090's 128x128 and an H100's 128x256); then through
    ReLU2MLP's autograd; then with a NaN in a weight, which must reach the output as it does through F.relu.
    -> dict(max_relative_error={name: error}, post_is_relu2_of_pre, nan_reaches_output)."""
    import torch
    import torch.nn.functional as F
    gen = torch.Generator().manual_seed(seed)
    x, fc, proj, grad = (torch.randn(*shape, generator=gen).div(shape[-1] ** 0.5).bfloat16().to(device)
                         for shape in ((M, D), (D, 4 * D), (D, 4 * D), (M, D)))
    error = lambda a, b: ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
    errors, post_exact = {}, True
    for shared_memory in shared_memories:
        pre, post = tg.launch_mm_relu2(x, fc, shared_memory=shared_memory)
        grad_pre = tg.launch_mm_relu2(grad, proj, pre, shared_memory=shared_memory)
        errors[f"pre ({shared_memory} B)"] = error(pre, x @ fc)
        errors[f"grad at pre ({shared_memory} B)"] = error(grad_pre, (grad @ proj) * 2 * F.relu(pre))
        post_exact &= torch.equal(post, F.relu(pre).square())
    ours, unfused = ([t.clone().requires_grad_() for t in (x, fc, proj)] for _ in range(2))
    y = tg.ReLU2MLP.apply(*ours)
    y_ref = F.linear(F.relu(unfused[0] @ unfused[1]).square(), unfused[2])
    (y * grad).sum().backward()
    (y_ref * grad).sum().backward()
    errors["output"] = error(y, y_ref)
    errors.update({f"grad {name}": error(a.grad, b.grad) for name, a, b in zip(("x", "fc", "proj"), ours, unfused)})
    fc_nan = fc.clone()
    fc_nan[0, 0] = float("nan")
    nan_reaches = not tg.ReLU2MLP.apply(x, fc_nan, proj).float().sum().isfinite().item()
    return dict(max_relative_error=errors, post_is_relu2_of_pre=post_exact, nan_reaches_output=nan_reaches)


def load_train_gpt(path):
    """Import the train_gpt.py to check (the repository's, or a changed copy given with --train_gpt=PATH)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_gpt", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_gpt"] = module
    spec.loader.exec_module(module)
    return module


def failures(report):
    """The checks a report must pass: -> list of one-line reasons."""
    bad = []
    if report["level"] == "kernels":
        bad += [f"ReLU² MLP kernel: {name} off by {err:.2g} of its largest value (limit 2**-7, about one bf16 step)"
                for name, err in report["max_relative_error"].items() if not err <= 2 ** -7]
        if not report["post_is_relu2_of_pre"]:
            bad.append("ReLU² MLP kernel: its relu(pre)² output is not relu(pre)² of its own pre")
        if not report["nan_reaches_output"]:
            bad.append("ReLU² MLP kernel: a NaN weight gives a finite output (its ReLU drops NaN; F.relu keeps it)")
    if report["level"] == "fake" and not report["attention_bf16_blockmask"]:
        bad.append(f"attention inputs {report['attention_inputs']}: FlexAttention must get bf16 q, k, v and a"
                   " BlockMask")
    if report["level"] == "fake" and not report["attention_calls"]:
        bad.append("no attention call seen: the fake step's watch on train_gpt.attention no longer matches")
    if report["level"] == "fake" and report["fp8_head"] and not report["fp8_calls"]:
        bad.append("the FP8 head is on but the training step made no FP8 matmul (torch._scaled_mm)")
    if report["level"] == "fake" and report["eager_eval_peak_gib"] > report["memory_gib"]:
        bad.append(f"validation without compile peaks at {report['eager_eval_peak_gib']:.1f} GiB of live tensors, more"
                   f" than the GPU's {report['memory_gib']:.1f} GiB")
    if report["level"] == "run":
        if report["dynamo_graphs"] != report["expected_graphs"]:
            bad.append(f"{report['dynamo_graphs']} graphs, expected {report['expected_graphs']} (training and"
                       " validation): something recompiles as the schedules move")
        if report["ptxas_peak_gib"] > 2:
            bad.append(f"ptxas needed {report['ptxas_peak_gib']:.1f} GiB for {report['ptxas_peak_kernel']} (limit 2)")
        if (report["compile_seconds"] or 0) > 300:
            bad.append(f"compiling took {report['compile_seconds']:.0f} s (limit 300)")
    return bad


def inner(argv):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tools/record.py
    command, rest = argv[0], argv[1:]
    options = dict(a[2:].split("=", 1) for a in rest if a.startswith(("--gpu=", "--steps=", "--train_gpt=")))
    train_args = [a for a in rest if not a.startswith(("--gpu=", "--steps=", "--train_gpt="))]
    import torch
    warnings.filterwarnings("ignore", "flex_attention called without torch.compile")  # fake step: on purpose
    log = os.environ["VGPU_PTXAS_LOG"]  # every ptxas run of this process and its compile workers
    tg = load_train_gpt(options.get("train_gpt", os.path.join(ROOT, "train_gpt.py")))
    props = torch.cuda.get_device_properties(0)
    runnable = [int(arch[3:]) for arch in torch.cuda.get_arch_list()
                if arch.startswith("sm_") and int(arch[3:]) <= 10 * props.major + props.minor]
    if runnable:  # the code the driver would pick for this GPU (sm_86 on a 4090): see kernel_arch() in the stub
        os.environ["VGPU_KERNEL_ARCH"] = str(max(runnable))
    header = dict(gpu=props.name, capability=f"{props.major}.{props.minor}", torch=torch.__version__,
                  train_args=train_args)
    reports = []
    if command == "kernels":
        reports.append(interpret_kernels(tg))
    elif command == "fake":
        reports.append(fake_step(tg, train_args))
    elif command == "record":
        reports.append(record_run(tg, record_date(train_args), int(options.get("steps", 3))))
    else:
        report = null_gpu_run(tg, train_args, int(options.get("steps", 3)))
        runs = [line.split() for line in open(log)] if os.path.exists(log) else []  # ptxas: peak KiB, s, kernel
        peak = max(runs, key=lambda r: int(r[0]), default=["0", "0", "-"])
        report.update(ptxas_runs=len(runs), ptxas_peak_gib=int(peak[0]) / 2**20, ptxas_peak_kernel=peak[2],
                      ptxas_max_seconds=max((float(r[1]) for r in runs), default=0.0))
        reports.append(report)
    bad = []
    for report in reports:
        report = {**header, **report}
        print(REPORT_PREFIX + json.dumps(report), flush=True)
        bad += failures(report)
    for reason in bad:
        print(f"vgpu: FAIL {reason}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["ptxas"]:  # Triton's ptxas, from inside the inner process
        sys.exit(ptxas(sys.argv[2:]))
    sys.exit(inner(sys.argv[1:]) if os.environ.get("VGPU_INNER") else main(sys.argv[1:]))
