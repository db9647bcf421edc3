"""modded-nanogpt's track-1 record of 2025-08-23, as its log in ../shared/reference carries its train_gpt.py
(MIT): its definitions (FP8 op, Newton-Schulz kernels, Muon, DistAdam, model, data loader) and its schedules,
executed into a namespace, for tests/test_record.py (on CPU, --preset=record against it) and for
tools/virtual_gpu.py report (on the virtual GPU, its costs beside ours). Nothing of it is copied into this project.

load(cpu=True) swaps its CUDA-only pieces for CPU equivalents: dense masks for FlexAttention, an fp32
Newton-Schulz for its Triton kernels, eager functions for its compiled ones. Either way its collectives run as one
process (OneProcess: gloo has no futures on its async work, which the record waits on).
"""
import ast
import re
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

# Its Newton-Schulz kernels run with one of their 30 triton.autotune configurations (BLOCK_SIZE_M, N, K, stages,
# warps): otherwise each is compiled and, on a real GPU, benchmarked for every matrix shape on the first step (what
# that cost on the null GPU: README, Measured on a GPU). Its speed may differ from its own choice; its math not.
PINNED = (128, 128, 64, 3, 8)
SOURCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "modded-nanogpt_2025-08-23_020630eb.txt"


class OneProcess:
    """torch.distributed as the only process of a group sees it."""
    ReduceOp = torch.distributed.ReduceOp

    class Done:
        def get_future(self):
            future = torch.futures.Future()
            future.set_result(None)
            return future

    get_rank = staticmethod(lambda: 0)
    get_world_size = staticmethod(lambda: 1)

    def reduce_scatter(self, out, inputs, op=None, async_op=False):
        out.copy_(inputs[0])
        return self.Done()

    def reduce_scatter_tensor(self, out, tensor, op=None, async_op=False):
        out.copy_(tensor)
        return self.Done()

    def all_gather(self, outs, tensor, async_op=False):  # the record gathers each rank's own slice in place:
        return self.Done()  # with one rank the output is the input already

    all_gather_into_tensor = all_gather


def dense_flex_attention(q, k, v, block_mask, scale):
    """What the flex kernel computes: listed 'full' blocks whole, listed partial blocks through mask_mod."""
    n = q.size(-2) // 128
    qi, ki = torch.arange(q.size(-2))[:, None], torch.arange(q.size(-2))[None, :]

    def listed(counts, indices):
        blocks = torch.zeros(n, n, dtype=torch.bool)
        for row in range(n):
            blocks[row, indices[0, 0, row, :max(int(counts[0, 0, row]), 0)].long()] = True
        return blocks.repeat_interleave(128, 0).repeat_interleave(128, 1)
    mask = listed(block_mask.full_kv_num_blocks, block_mask.full_kv_indices) | (
        listed(block_mask.kv_num_blocks, block_mask.kv_indices) & block_mask.mask_mod(0, 0, qi, ki))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def newton_schulz_fp32(G):
    """The record's newton_schulz_triton, in fp32 with plain matmuls (its Triton kernels compute the same)."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.float()
    if G.size(-2) > G.size(-1):
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(5):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(-2) > G.size(-1):
        X = X.mT
    return X


def load(cpu, source=SOURCE):
    """The record's definitions and schedules (get_lr, get_window_size_blocks) as a dict; None without its source
    (../shared/reference, or where tools/gpu_check.py carried it)."""
    source = Path(source)
    if not source.exists():
        return None
    text = source.read_text()
    code = text[:text.index("\n=====")]  # the script, then its log
    # its lines stay where they are: Triton reads its kernels' source back from the file
    code = (code.replace("with open(sys.argv[0]) as f:\n    code = f.read()", "if True:\n    code = ''")  # its log
            .replace('torch.empty(1, device="cuda", requires_grad=True).backward()', ""))
    if cpu:
        code = (code.replace('device="cuda"', 'device="cpu"').replace("pin_memory=True", "pin_memory=False")
                .replace(".cuda(non_blocking=True)", ""))
        code = re.sub(r"^\s*@torch\.compile.*\n", "", code, flags=re.M)
        triton_start = code.index("# Triton kernel for symmetric matrix multiplication")
        code = code[:triton_start] + code[code.index("# Muon optimizer"):]  # newton_schulz_fp32 instead
        code = re.sub(r"^import triton.*\n", "", code, flags=re.M)
    definitions, main = code.split("# int main", 1)
    schedules = [ast.get_source_segment(main, node) for node in ast.parse(main).body
                 if isinstance(node, ast.FunctionDef) and node.name.startswith(("get_lr", "get_window_size"))]
    module = types.ModuleType("record_2025_08_23")  # a module dynamo can import by name
    module.__file__ = str(source)
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    exec(compile(definitions + "\n".join(schedules), str(source), "exec"), namespace)
    namespace["dist"] = OneProcess()
    size = lambda c: (*(c.kwargs[f"BLOCK_SIZE_{d}"] for d in "MNK"), c.num_stages, c.num_warps)
    for kernel in [value for value in namespace.values() if type(value).__name__ == "Autotuner"]:  # CUDA only
        kernel.configs = [c for c in kernel.configs if size(c) == PINNED]
        assert len(kernel.configs) == 1, f"{PINNED} is not one of its autotune configurations"
    if cpu:
        namespace.update(flex_attention=dense_flex_attention, newton_schulz_triton=newton_schulz_fp32)
    return namespace


def cuda_model(record):
    """The record's model on the GPU as its script builds it: bf16 embedding tables."""
    args = record["args"]
    model = record["GPT"](vocab_size=50257, num_layers=12, num_heads=6, model_dim=768,
                          max_seq_len=max(args.train_seq_len, args.val_seq_len)).cuda()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            module.bfloat16()
    return model


def trainer(record, model, compile=False):
    """The record's optimizers over `model` as its script makes them (its learning rates; compile: its
    torch.compile(dynamic=False, fullgraph=True) of the model); -> step(index, sequences), one optimizer step of
    its training loop over its micro-batches (1-D int64 tensors of seq_len + 1 tokens, 8 in its script), returning
    the summed loss; say(text), if given, hears when each part of the step is done (host time: on a first step,
    where compiling and autotuning went). For tests/test_record.py, tools/virtual_gpu.py report and
    tools/gpu_check.py."""
    hidden = [p for n, p in model.blocks.named_parameters() if p.ndim >= 2 and "embed" not in n]
    embed = [p for n, p in model.named_parameters() if "embed" in n]
    scalar = [p for p in model.parameters() if p.ndim < 2]
    adam = record["DistAdam"](scalar + [model.lm_head.weight] + embed, lr=0.008, betas=(0.8, 0.95), eps=1e-10,
                              weight_decay=0.0)
    muon = record["Muon"](hidden, lr=0.05, momentum=0.95, weight_decay=0.0)
    for opt in (adam, muon):
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    forward = torch.compile(model, dynamic=False, fullgraph=True) if compile else model

    def step(index, sequences, say=None):
        loss, start = 0, time.perf_counter()
        for i, seq in enumerate(sequences):  # grad_accum_steps = 8 // world_size
            micro = forward(seq[:-1].int(), seq[1:], record["get_window_size_blocks"](index))
            micro.backward()
            loss = loss + micro.detach()
            if say:
                say(f"step {index}: micro-batch {i + 1} forward and backward done at"
                    f" {time.perf_counter() - start:.0f} s")
        for opt in (adam, muon):
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * record["get_lr"](index)
        for group in muon.param_groups:
            frac = min(index / 300, 1)
            group["momentum"] = (1 - frac) * 0.85 + frac * 0.95
        for opt in (adam, muon):
            opt.step()
            if say:
                say(f"step {index}: {type(opt).__name__} done at {time.perf_counter() - start:.0f} s")
        model.zero_grad(set_to_none=True)
        return loss
    return step
