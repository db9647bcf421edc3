#!/usr/bin/env bash
# ./bench.sh [--field=value ...]: the runs behind README's performance table, one after another on GPU 0.
#   record   the record preset, 200 steps (gradient accumulation to the full 393K-token batch): tok/s, MFU,
#            step_avg, peak memory, compile time, val loss at step 200
#   plain    the same run with every trick at its plain-GPT setting (PLAIN below): do the tricks help?
#   4090     the 4090 preset, 20 steps under a 24 GB cap (torch.cuda.set_per_process_memory_fraction)
#   cpu      the cpu smoke preset on CUDA, 60 steps: the val loss must fall
# Extra arguments go to every run, e.g. the data: --train_files='.gpu/proxy/wiki_train_*.bin'
# --val_files='.gpu/proxy/wiki_val_*.bin' (default: FineWeb in data/fineweb10B). Logs: logs/bench_<tag>_<name>.txt
# (BENCH_TAG, default the time); the summary table comes from compare.py. BENCH_RUNS picks a subset.
set -euo pipefail
cd "$(dirname "$0")"
tag=${BENCH_TAG:-$(date +%Y%m%d-%H%M%S)}
runs=${BENCH_RUNS:-"record plain 4090 cpu"}
# 3 x 256K tokens: whole val sequences of every preset (256K record, 16K 4090) that fit the 1M-token proxy val shard
common=(--val_loss_every=0 --train_log_every=25 --val_tokens=786432 --save_checkpoint=false)
# plain GPT: full RoPE, no QK-norm (scale 1/sqrt(128)), GELU (unfused), no zero-init, no skips/lambdas/extra
# embeddings/gates/backout/softcap, bf16 head, attention in every layer, GPT-2's 1024-token context as a fixed window
PLAIN=(--rope_fraction=1 --qk_norm=false --attn_scale=0.08838834764831845 --mlp_act=gelu --fused_mlp=false
       --zero_init_out=false --unet_skips=false --x0_skip=false --value_embeds=0 --smear_gate=false --bigram_embed=0
       --attn_gate=false --backout=false --logit_softcap=0 --fp8_head=off --no_attn_layers= --norm_after_embed=false
       --window_pattern=L --window_blocks_start=8 --window_blocks_end=8 --muon_ortho=ns5 --max_doc_len=0
       --window_tokens=false --multi_token=false --ve_gate=false --sa_lambdas=false --gated_skip= --key_offset=false
       --yarn=false --tied_embed_until=0 --value_embed_layout= --window_schedule= --val_window_blocks=0
       --bigram_dim=0 --bigram_signs=0 --value_embed_std=0 --ve_gate_mix=false --attn_out_init=false --paired_heads=
       --pair_muon=false --xsa_layers= --attn_input_layer=-1 --sublayer_lambdas=false --mudd=false
       --mtp_tail_grad=false --fp8_mlp=off --doc_len_schedule=)
logs=()
for name in $runs; do
    case $name in
        record) flags=(--preset=record --num_iterations=200) ;;
        plain)  flags=(--preset=record --num_iterations=200 "${PLAIN[@]}") ;;
        4090)   flags=(--preset=4090 --num_iterations=20 --memory_cap_gib=24 --train_log_every=5) ;;
        cpu)    flags=(--preset=cpu --val_loss_every=20) ;;
        *) echo "bench.sh: unknown run '$name' in BENCH_RUNS (record, plain, 4090, cpu)"; exit 2 ;;
    esac
    log=logs/bench_${tag}_$name.txt
    echo "bench.sh: $name -> $log"
    if CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} python3 train_gpt.py "${common[@]}" "${flags[@]}" "$@" \
        --run_id="bench_${tag}_$name"; then
        logs+=("$log")
    else
        echo "bench.sh: $name failed, see $log"
    fi
done
if [ ${#logs[@]} -gt 0 ]; then python3 compare.py "${logs[@]}"; fi
