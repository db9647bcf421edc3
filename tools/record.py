"""modded-nanogpt's track-1 records, as their logs in ../shared/reference carry their train_gpt.py (MIT): a record's
definitions (FP8 op, Muon/NorMuon, DistAdam, model, data loader, training manager) and the schedules and
Hyperparameters of its main part, executed into a namespace, for tests/test_record.py (on CPU, our presets against
them) and tools/virtual_gpu.py report and tools/gpu_check.py (on a GPU, its costs beside ours). Nothing of them is
copied into this project.

What differs between records is a row of RECORDS. load(date, cpu=True) swaps their CUDA-only pieces for CPU
equivalents: the Triton kernels of their Newton-Schulz / Polar Express (each computes one line of the iteration;
torch.matmul computes the same, and the iteration runs in fp32 instead of bf16), dense masks for FlexAttention
(2025-08-23), a dense mask over cu_seqlens for FlashAttention-3's varlen call (2025-12-31), eager functions for
compiled ones; 2026-07-17's triton_kernels.py becomes torch stand-ins (kernels_2026_07_17). On a GPU its kernels
run as they are (its CUDA cross-entropy compiled by NVRTC with torch's CUDA headers). On either device their
collectives run as the only process of a group (OneProcess: gloo has no futures on its async work, which the
records wait on).
"""
import ast
import re
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
TRITON_START = "# Triton kernel for symmetric matrix multiplication"  # both records' banner
# On a GPU their Newton-Schulz kernels run with one of their 30 triton.autotune configurations (BLOCK_SIZE_M, N, K,
# stages, warps): otherwise each is compiled and, on a real GPU, benchmarked for every matrix shape on the first
# step (what that cost on the null GPU: README, Measured on a GPU). Its speed may differ from its own choice; its
# math not.
PINNED = (128, 128, 64, 3, 8)


@dataclass
class Record:
    file: str  # in ../shared/reference
    triton_end: str  # the first line after its Triton kernels (they start at TRITON_START)
    kernels: tuple  # the names of its two kernel launchers: (A @ A.T, alpha * A @ A.T + beta * A)
    main_names: tuple  # what the tests need from its main part (after "# int main"): schedules, Hyperparameters
    main_globals: dict = field(default_factory=dict)  # what its main sets that its definitions read, at 1 process
    gathers_in_place: bool = False  # every all-gather's output holds its input already at 1 process
    kernels_file: bool = False  # its Triton kernels are its triton_kernels.py, logged after the script (2026-07-17)


RECORDS = {
    "2025-08-23": Record("modded-nanogpt_2025-08-23_020630eb.txt",
                         "@torch.compile(dynamic=False, fullgraph=True) # Must use dynamic=False",
                         ("ns_line_1", "ns_line_2"), ("get_lr", "get_window_size"), gathers_in_place=True),
    "2025-12-31": Record("modded-nanogpt_2025-12-31_96a77cab.txt", "# Computed for num_iters=5",
                         ("XXT", "ba_plus_cAA"), ("Hyperparameters",),
                         dict(rank=0, world_size=1, grad_accum_steps=8)),  # its main: 8 // world_size
    # its distributed setup is at the top of the script (blanked: these stand for it, at 1 process)
    "2026-07-17": Record("modded-nanogpt_2026-07-17_11cb620c.txt", "", ("XXT", "ba_plus_cAA"), (),
                         dict(rank=0, world_size=1, grad_accum_steps=8, grad_scale=1 / 8, master_process=True),
                         kernels_file=True),
}


class OneProcess:
    """torch.distributed as the only process of a group sees it: every collective leaves this rank's data. Where
    a record gathers in place, its gathers do nothing (a copy onto itself would be a mutation for its compiled
    step to trace)."""
    ReduceOp = torch.distributed.ReduceOp

    def __init__(self, gathers_in_place):
        self.gathers_in_place = gathers_in_place

    class Done:
        def get_future(self):
            future = torch.futures.Future()
            future.set_result(None)
            return future

        def wait(self):
            return True

    get_rank = staticmethod(lambda: 0)
    get_world_size = staticmethod(lambda: 1)
    is_initialized = staticmethod(lambda: True)

    def all_reduce(self, tensor, op=None, async_op=False):
        return self.Done()

    def reduce_scatter(self, out, inputs, op=None, async_op=False):
        out.copy_(inputs[0])
        return self.Done()

    def reduce_scatter_tensor(self, out, tensor, op=None, async_op=False):
        out.copy_(tensor)
        return self.Done()

    def all_gather(self, outs, tensor, async_op=False):
        return self.all_gather_into_tensor(outs[0], tensor)

    def all_gather_into_tensor(self, out, tensor, async_op=False):
        if not self.gathers_in_place:
            out.copy_(tensor)
        return self.Done()


class Counting(OneProcess):
    """torch.distributed as rank 0 of `world_size` sees it, for counting only: each collective's kind and the bytes
    of its whole tensor (all-reduce: the tensor; reduce-scatter: its input; all-gather: its output; all-to-all: its
    input), in `sent`; no data moves (on the null GPU nothing is read)."""

    def __init__(self, world_size):
        super().__init__(gathers_in_place=True)
        self.world_size, self.sent = world_size, dict(all_reduce=0, reduce_scatter=0, all_gather=0, all_to_all=0)

    def get_world_size(self):
        return self.world_size

    def count(self, kind, tensors):
        self.sent[kind] += sum(t.numel() * t.element_size() for t in tensors)
        return self.Done()

    def all_reduce(self, tensor, op=None, async_op=False):
        return self.count("all_reduce", [tensor])

    def reduce_scatter(self, out, inputs, op=None, async_op=False):
        return self.count("reduce_scatter", inputs)

    def reduce_scatter_tensor(self, out, tensor, op=None, async_op=False):
        return self.count("reduce_scatter", [tensor])

    def all_gather(self, outs, tensor, async_op=False):
        return self.count("all_gather", outs)

    def all_gather_into_tensor(self, out, tensor, async_op=False):
        return self.count("all_gather", [out])

    def all_to_all_single(self, out, tensor, output_split_sizes=None, input_split_sizes=None, async_op=False):
        """(all-to-all: its input, less what stays on this rank.) Counts exchanged without split sizes (record
        2026-07-17's sparse rows) come back as sent: every rank receives what it sends."""
        if output_split_sizes is None and out.shape == tensor.shape:
            out.copy_(tensor)
        return self.count("all_to_all", [tensor])


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


def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, softmax_scale,
                     window_size):
    """What FlashAttention-3's flash_attn_varlen_func computes for the records' call (q, k, v: (T, H, d), the
    documents packed, cu_seqlens their boundaries, padded at the end with T; causal): query i sees key j of its
    own document with i - window_size[0] <= j <= i."""
    assert causal and torch.equal(cu_seqlens_q, cu_seqlens_k)  # as the records call it
    pos = torch.arange(q.size(0), device=q.device)
    doc = torch.searchsorted(cu_seqlens_q.to(pos.dtype), pos, right=True)  # (T,) document of each position
    i, j = pos[:, None], pos[None, :]
    mask = (doc[:, None] == doc[None, :]) & (j <= i) & (j >= i - window_size[0])  # (T, T)
    y = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask,
                                       scale=softmax_scale)
    return y.transpose(0, 1).contiguous()  # (T, H, d) as FlashAttention returns it


def flex_varlen_attention(tg):
    """FlashAttention-3's varlen call (as varlen_attention reads it) computed by train_gpt.py's FlexAttention, for
    the records' runs on a GPU: a BlockMask of the documents that cu_seqlens bounds and the window in tokens
    (window_tokens), then the same flex call as ours."""
    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
                               softmax_scale, window_size):
        assert causal and window_size[0] % tg.BLOCK == 0  # as the records call it: windows of whole blocks
        positions = torch.arange(q.size(0), device=q.device, dtype=cu_seqlens_q.dtype)
        docs = torch.searchsorted(cu_seqlens_q, positions, right=True)[None]  # (1, T) document of each position
        mask = tg.block_mask(docs, torch.tensor(window_size[0] // tg.BLOCK, device=q.device), tokens=True)
        return tg.attention(q[None], k[None], v[None], mask, softmax_scale)[0]
    return types.SimpleNamespace(flash_attn_varlen_func=flash_attn_varlen_func)


def cu_seqlens(inputs):
    """What record 2025-12-31's loader hands FlashAttention with a 1-D sequence that starts a document: 0, each later
    document start, then its length, padded with its length to its fixed size (T // 300 rounded up to 128)."""
    T = inputs.numel()
    starts = torch.nonzero(inputs[1:] == 50256)[:, 0] + 1
    out = torch.full((max(-(-(T // 300) // 128) * 128, len(starts) + 2),), T, dtype=torch.int32,
                     device=inputs.device)
    out[0] = 0
    out[1:len(starts) + 1] = starts
    return out


def loader_batches(sequences):
    """1-D token sequences (seq_len + 1 tokens, each starting a document) as record 2025-12-31's loader yields
    them: (inputs as int32, targets, cu_seqlens)."""
    return [(seq[:-1].int(), seq[1:], cu_seqlens(seq[:-1])) for seq in sequences]


def loader_batch_2026_07_17(record, sequence):
    """A 1-D CPU token sequence (seq_len + 1 tokens, starting a document) as record 2026-07-17's loader yields it
    on a GPU: (inputs as int32, targets, cumulative document lengths padded to its TRAIN_MAX_NUM_DOCS, bigram hashes)
    on the GPU, then the bigram hashes as a numpy array."""
    inputs, targets = sequence[:-1].int(), sequence[1:]
    lengths = cu_seqlens(inputs)
    lengths = lengths[:record["TRAIN_MAX_NUM_DOCS"].get(len(inputs), len(lengths))]
    bigrams = record["get_bigram_hash"](inputs)
    return (inputs.cuda(), targets.cuda(), lengths.cuda(), bigrams.cuda(), bigrams.numpy())


def flash_attention_hub(name, version=None):
    """Stands in for the `kernels` hub's get_kernel('varunneal/flash-attention-3'), which is not stock PyTorch."""
    return types.SimpleNamespace(flash_attn_interface=types.SimpleNamespace(flash_attn_varlen_func=varlen_attention))


def symmetric_square(A, out):
    """A @ A.T, what both records' first Newton-Schulz kernel computes."""
    return torch.matmul(A, A.mT, out=out)


def scaled_square_plus(A, alpha, beta, out):
    """alpha * A @ A.T + beta * A (A symmetric), what both records' second kernel computes."""
    return (torch.baddbmm if A.ndim == 3 else torch.addmm)(A, A, A.mT, beta=beta, alpha=alpha, out=out)


def transposed_square(A, out):
    """A.T @ A, what record 2026-07-17's XTX kernel computes (its Polar Express on tall matrices)."""
    return torch.matmul(A.mT, A, out=out)


class SoftcappedCrossEntropy(torch.autograd.Function):
    """What record 2026-07-17's FusedSoftcappedCrossEntropy computes (its FP8 matmuls and CUDA kernel ce_fwd_bwd),
    in the inputs' precision with plain matmuls: logits = x @ W (W stored (D, V)), z = A sigmoid((logits + B) / C),
    per row t the loss sum_k w_k (lse_t - z_t[target_{t+k}]) over the k with t + k < rows; and the gradient as its
    kernel writes it in the forward: grad_scale (its argument; the backward's incoming gradient is not read, as
    there) times (S_w softmax(z) - the w_k of the valid k whose target each logit is) times dz/dlogits, where S_w
    sums all the weights, also those of the k that run past the last row."""

    @staticmethod
    def forward(ctx, x, targets, mtp_weights, w, x_s, w_s, grad_s, grad_scale, A=23.0, B=5.0, C=7.5):
        s = torch.sigmoid((x @ w + B) / C)
        z = A * s
        lse, n = z.logsumexp(-1), len(targets)
        weights = torch.ones(1) if mtp_weights is None else mtp_weights.float()
        losses, hits = torch.zeros(n, dtype=z.dtype), torch.zeros_like(z)
        for k, weight in enumerate(weights):
            rows = torch.arange(n - k)
            losses[:n - k] += weight * (lse[:n - k] - z[rows, targets[k:]])
            hits.index_put_((rows, targets[k:]), weight.expand(n - k).to(z.dtype), accumulate=True)
        dz = weights.sum() * torch.softmax(z, -1) - hits
        ctx.save_for_backward(x, w, grad_scale * dz * (A / C) * s * (1 - s))
        return losses

    @staticmethod
    def backward(ctx, grad_output):
        x, w, dlogits = ctx.saved_tensors
        return dlogits @ w.T, None, None, x.T @ dlogits, None, None, None, None, None, None, None


class ReLUSquareMLP(torch.autograd.Function):
    """What record 2026-07-17's FusedLinearReLUSquareFunction computes: relu(x @ W1.T)^2 @ W2, with its FP8 paths
    as its kernel and torch._scaled_mm compute them (FP8 values as exact floats, products summed in fp32): the
    up-projection from x_f8 and W1_f8 times dequant_scale; the down-projection from the activation quantised by
    its delayed scale (min(post / scale, 448) in e4m3), times that scale and W2's. partial_amax, each GPU
    program's largest activation, is the whole activation's on every entry (each program has tiles on a GPU).
    Backward from the saved pre-activation, in x's precision, as its kernel."""

    @staticmethod
    def forward(ctx, x, W1, W2, W1_f8=None, dequant_scale=None, x_f8=None, W2_f8=None, W2_scale=None,
                activation_scale=None, partial_amax=None):
        x_flat = x.view(-1, x.shape[-1])
        if W1_f8 is not None:
            x_f8 = x_f8.view(-1, x_f8.shape[-1])
            pre = ((x_f8.float() @ W1_f8.float().T) * dequant_scale).to(x.dtype)
        else:
            pre = x_flat @ W1.T
        post = F.relu(pre).square()
        if W2_f8 is not None:
            post_f8 = (post.float() * (1 / activation_scale)).clamp(max=448.0).to(torch.float8_e4m3fn)
            partial_amax.fill_(post.float().max())
            out = ((post_f8.float() @ W2_f8.float()) * (activation_scale * W2_scale)).to(x.dtype)
        else:
            out = post @ W2
        ctx.save_for_backward(x, W1, W2, pre, post)
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, grad_output):
        x, W1, W2, pre, post = ctx.saved_tensors
        grad = grad_output.view(-1, grad_output.shape[-1])
        dpre = 2 * (grad @ W2.T) * F.relu(pre)
        return (dpre @ W1).view(x.shape), dpre.T @ x.view(-1, x.shape[-1]), post.T @ grad, *[None] * 8


def activation_scales(partial_amax, scales, headroom=1.25):
    """record 2026-07-17's reduce_mlp_activation_scales: each layer's largest partial amax times headroom / 448."""
    scales[:len(partial_amax)] = partial_amax.amax(dim=1).clamp_min(1e-12) * (headroom / 448.0)


def quantized_down_weights(weights, output_storage, next_scales, used_scales, partial_amax, headroom=1.12):
    """record 2026-07-17's quantize_transpose_mlp_down_weights: (L, H, D) weights / next_scales (the delayed scale
    of each layer), clamped to +-448, transposed into e4m3 (L, D, H); used_scales becomes the scale used; then
    next_scales the weights' amax times headroom / 448."""
    values = weights.float()
    quantized = (values / next_scales.view(-1, 1, 1)).clamp(-448.0, 448.0)
    output_storage.copy_(quantized.transpose(1, 2).to(torch.float8_e4m3fn))
    partial_amax.copy_(values.abs().amax(dim=(1, 2))[:, None].expand_as(partial_amax))
    used_scales.copy_(next_scales)
    activation_scales(partial_amax, next_scales, headroom)


def kernels_2026_07_17(original_update):
    """Its triton_kernels.py as CPU stand-ins, and its NorMuon's bf16 + mantissa update done on fp32 weights."""
    def update(p, mantissa, grad, wd_tensor, lr_tensor):
        if p.shape == mantissa.shape:  # bf16 weights (their script's): its own update
            return original_update(p, mantissa, grad, wd_tensor, lr_tensor)
        p = p.view(torch.float32)  # fp32 weights are its bf16 + mantissa pair: the same update on them
        mask = (grad * p) >= 0
        p.copy_(p - p * mask * wd_tensor * lr_tensor - grad * lr_tensor)
    return dict(XXT=symmetric_square, XTX=transposed_square, ba_plus_cAA=scaled_square_plus,
                FusedLinearReLUSquareFunction=ReLUSquareMLP, FusedSoftcappedCrossEntropy=SoftcappedCrossEntropy,
                quantize_transpose_mlp_down_weights=quantized_down_weights,
                reduce_mlp_activation_scales=activation_scales,
                transpose_add=lambda src, dst: dst.add_(src.T), transpose_copy=lambda src, dst: dst.copy_(src.T),
                update=staticmethod(update))


def load(date, cpu, reference=REFERENCE):
    """The record of `date`: its definitions, the main part's RECORDS names and its globals, as a dict; `args` is
    its Hyperparameters(). None without its source (../shared/reference, or where tools/gpu_check.py carried it)."""
    record = RECORDS[date]
    source = Path(reference) / record.file
    if not source.exists():
        return None
    text = source.read_text()
    code = text[:text.index("\n=====")]  # the script, then its log
    kernels_code = None
    if record.kernels_file:  # the script, then its triton_kernels.py
        split = code.index("\n\n" + "-" * 40 + "\n# triton_kernels.py")
        kernels_code = "\n" * code[:split].count("\n") + re.sub(r"^-+$", "", code[split:], flags=re.M)  # its lines
        code = code[:split]
        start, end = code.index("with open(sys.argv[0], 'r')"), code.index("import copy")  # reads its source
        code = code[:start] + "code = ''" + "\n" * code[start:end].count("\n") + code[end:]
        start = code.index('rank = int(os.environ["RANK"])')  # its distributed setup, to master_process's line
        end = code.index("\n", code.index("master_process = (rank == 0)"))
        code = code[:start] + "\n" * code[start:end].count("\n") + code[end:]
        code = re.sub(r"^from triton_kernels import .*$", "", code, flags=re.M)
    name = f"record_{date.replace('-', '_')}"
    # its lines stay where they are: Triton reads its kernels' source back from the file
    blank = lambda match: "\n" * match.group().count("\n")
    code = re.sub(r"torch\.empty\(\s*1,\s*device=[^)]*\)\s*\.backward\(\)", blank, code)  # a CUDA-only workaround
    code = (code.replace("with open(sys.argv[0]) as f:\n    code = f.read()", "if True:\n    code = ''")  # its log
            .replace("from kernels import get_kernel", "").replace('"nanogpt::', f'"{name}::')
            .replace("torch.ops.nanogpt.", f"torch.ops.{name}."))  # its custom ops: a namespace per record
    if cpu:
        code = (code.replace('device="cuda"', 'device="cpu"').replace("pin_memory=True", "pin_memory=False")
                .replace(".cuda(non_blocking=True)", "").replace("X = G.bfloat16()", "X = G.float()")
                .replace("w.bfloat16() for w in self.", "w.float() for w in self.")  # 12-31's gate banks
                # 12-31's key offset, k[:, 1:, ...] = k[:, :-1, ...]: compiled (as it runs) the copy reads before it
                # writes, a shift by one position; eager on CPU it copies in order, smearing position 0 down
                .replace("= k[:, :-1, :, self.head_dim // 4:self.head_dim // 2]",
                         "= k[:, :-1, :, self.head_dim // 4:self.head_dim // 2].clone()")
                .replace("= k[:, :-1, :, 3 * self.head_dim // 4:]", "= k[:, :-1, :, 3 * self.head_dim // 4:].clone()")
                .replace('os.environ["PYTORCH_ALLOC_CONF"]', "_alloc_conf").replace("dynamo.config.", "_dynamo_")
                # 2026-07-17: its Polar Express in fp32 as the others'; its key offset as 12-31's; an H100's SMs
                .replace("X = g.bfloat16()", "X = g.float()")
                .replace("= k[:, :-1, :, self.head_dim // 2:]", "= k[:, :-1, :, self.head_dim // 2:].clone()")
                .replace("torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count",
                         "132"))
        if not record.kernels_file:
            start, end = code.index(TRITON_START), code.index(record.triton_end)
            code = code[:start] + "\n" * code[start:end].count("\n") + code[end:]
        code = re.sub(r"^\s*(@torch\.compile|import triton).*$", "", code, flags=re.M)
    definitions, main = code.split("# int main", 1)
    lines = main.splitlines()
    wanted = [lines[min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1:node.end_lineno]
              for node in ast.parse(main).body
              if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name.startswith(record.main_names)]
    module = types.ModuleType(name)  # a module dynamo can import by name
    module.__file__ = str(source)
    sys.modules[name] = module
    namespace = module.__dict__
    device = torch.device("cpu" if cpu else "cuda")
    namespace.update(get_kernel=flash_attention_hub, device=device, record_date=date, **record.main_globals)
    if kernels_code and cpu:
        kernels = kernels_2026_07_17(None)
        namespace.update({k: v for k, v in kernels.items() if k != "update"})
    elif kernels_code:  # its Triton kernels as they are; its CUDA cross-entropy compiled with torch's CUDA headers
        headers = next(Path(torch.__file__).parents[1].glob("nvidia/*/include/cuda_bf16.h")).parent
        exec(compile(kernels_code.replace('"/usr/local/cuda/include/"', repr(str(headers))), str(source), "exec"),
             namespace)
        namespace["_get_dummy_f32"](device)  # its global made before its compile: torch 2.11's dynamo refuses the
        #                                      first write inside an autograd.Function's backward
    exec(compile(definitions + "\n".join(sum(wanted, [])), str(source), "exec"), namespace)
    if kernels_code and cpu:
        optimizer = namespace["NorMuonAndAdam"]
        optimizer._cautious_wd_and_update_inplace = kernels_2026_07_17(
            optimizer._cautious_wd_and_update_inplace)["update"]
    namespace["dist"] = OneProcess(record.gathers_in_place)
    if "args" not in namespace:
        namespace["args"] = namespace["Hyperparameters"]()
    size = lambda c: (*(c.kwargs[f"BLOCK_SIZE_{d}"] for d in "MNK"), c.num_stages, c.num_warps)
    for kernel in [value for value in namespace.values() if type(value).__name__ == "Autotuner"]:  # CUDA only
        kernel.configs = [c for c in kernel.configs if size(c) == PINNED]
        assert len(kernel.configs) == 1, f"{PINNED} is not one of its autotune configurations"
    if cpu:
        namespace.update(flex_attention=dense_flex_attention, **dict(zip(record.kernels, (symmetric_square,
                                                                                          scaled_square_plus))))
    return namespace


def cuda_model(record, tg):
    """The record's model on the GPU as its script builds it (its bf16 weights), FlashAttention-3 computed by
    train_gpt.py's FlexAttention (flex_varlen_attention)."""
    args = record["args"]
    if record["record_date"] == "2025-08-23":
        model = record["GPT"](vocab_size=50257, num_layers=12, num_heads=6, model_dim=768,
                              max_seq_len=max(args.train_seq_len, args.val_seq_len)).cuda()
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.bfloat16()
        return model
    record["flash_attn_interface"] = flex_varlen_attention(tg)
    model = record["GPT"](vocab_size=50257, num_layers=11, num_heads=6, head_dim=128, model_dim=768,
                          max_seq_len=args.val_batch_size // (record["grad_accum_steps"] * record["world_size"])).cuda()
    for module in model.modules():
        if isinstance(module, (torch.nn.Embedding, torch.nn.Linear)):
            module.weight.data = module.weight.data.bfloat16()
    banks = ["attn_gate_bank", "ve_gate_bank"]
    if record["record_date"] == "2026-07-17":
        banks += ["qk_bank", "vo_bank", "mlp_bank", "mudd_w1", "mudd_w2", "mudd_b2"]
    for name in banks:
        getattr(model, name).data = getattr(model, name).data.bfloat16()
    return model


def trainer(record, model, compile=False, forward=None):
    """The record's optimizers over `model` as its script makes them (its learning rates; compile: its
    torch.compile(dynamic=False, fullgraph=True) of the model); -> step(index, batches, say=None), one optimizer
    step of its training loop over its micro-batches (8 in its script at 1 process), returning their summed loss.
    2025-08-23: batches are 1-D int64 tensors of seq_len + 1 tokens. 2025-12-31: (inputs, targets, cu_seqlens)
    as its loader yields them, taken after its schedules advanced (a generator may read step.manager's batch
    size); its TrainingManager is step.manager. forward replaces the model's call (tools/virtual_gpu.py's count of
    collectives); say(text), if given, hears when each part of the step is done (host time: on a first step,
    where compiling and autotuning went). For tests/test_record.py, tools/virtual_gpu.py report and
    tools/gpu_check.py."""
    compiled = torch.compile(model, dynamic=False, fullgraph=True) if compile else model
    forward = forward or compiled
    if record["record_date"] == "2026-07-17":
        record["model"] = model  # its TrainingManager's sparse exchange reads the script's global
        manager = record["TrainingManager"](compiled)
        model.quantize_mlp_fp8(bootstrap_down=True)  # as its script leaves the model before its first step

        def step(index, batches, say=None):
            manager.advance_schedule(index)
            loss, start = 0, time.perf_counter()
            for i, (inputs, targets, seqlens, bigram_inputs, bigram_rows) in enumerate(batches):
                manager.sparse_index_update(index, bigram_rows)  # its sparse bigram-gradient exchange, at 8 GPUs
                micro = forward(inputs, targets, seqlens, bigram_inputs, manager.get_forward_args()).sum()
                manager.sparse_index_share(index)
                (micro * record["grad_scale"]).backward()
                loss = loss + micro.detach()
                if say:
                    say(f"step {index}: micro-batch {i + 1} forward and backward done at"
                        f" {time.perf_counter() - start:.0f} s")
            manager.step_optimizers(index)
            model.quantize_mlp_fp8(bootstrap_down=index < 16)
            if say:
                say(f"step {index}: optimizer done at {time.perf_counter() - start:.0f} s")
            return loss
        step.manager = manager
        return step
    if record["record_date"] == "2025-12-31":
        manager = record["TrainingManager"](compiled)
        manager.reset(manager.get_state())  # as its script leaves it after its warmup: no gradient sync pending

        def step(index, batches, say=None):
            manager.advance_schedule(index)
            loss, start, batches = 0, time.perf_counter(), list(batches)
            for i, (inputs, targets, seqlens) in enumerate(batches):
                if i == len(batches) - 1:  # its DistAdams' gradient hooks, on the last micro-batch of their steps
                    manager.activate_hooks(index)
                micro = forward(inputs, targets, seqlens, manager.get_forward_args())
                (micro / len(batches)).backward()
                loss = loss + micro.detach()
                if say:
                    say(f"step {index}: micro-batch {i + 1} forward and backward done at"
                        f" {time.perf_counter() - start:.0f} s")
            manager.step_optimizers(index)
            if say:
                say(f"step {index}: optimizers done at {time.perf_counter() - start:.0f} s")
            return loss
        step.manager = manager
        return step
    hidden = [p for n, p in model.blocks.named_parameters() if p.ndim >= 2 and "embed" not in n]
    embed = [p for n, p in model.named_parameters() if "embed" in n]
    scalar = [p for p in model.parameters() if p.ndim < 2]
    adam = record["DistAdam"](scalar + [model.lm_head.weight] + embed, lr=0.008, betas=(0.8, 0.95), eps=1e-10,
                              weight_decay=0.0)
    muon = record["Muon"](hidden, lr=0.05, momentum=0.95, weight_decay=0.0)
    for opt in (adam, muon):
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]

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
