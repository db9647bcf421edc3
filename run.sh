#!/usr/bin/env bash
# ./run.sh [--field=value ...]: train on every visible GPU with torchrun. Without --preset, the preset is picked
# from the hardware: one 24 GB-class card -> 4090, otherwise record (8xH100 math; fewer GPUs accumulate).
set -euo pipefail
cd "$(dirname "$0")"
gpus=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null || true)
if [ -z "$gpus" ]; then
    echo "run.sh: no NVIDIA GPU visible (nvidia-smi found none). For a CPU smoke run:" >&2
    echo "  python train_gpt.py --preset=cpu --train_files='data/fineweb10B/fineweb_train_*.bin' --val_files='data/fineweb10B/fineweb_val_*.bin'" >&2
    exit 1
fi
n=$(echo "$gpus" | wc -l)
preset=""
if [[ " $* " != *" --preset="* ]]; then
    min_mib=$(echo "$gpus" | sort -n | head -1)
    if [ "$min_mib" -lt 40000 ]; then preset=4090; else preset=record; fi
    echo "run.sh: $n GPU(s), smallest has $min_mib MiB -> --preset=$preset"
    preset="--preset=$preset"
fi
exec torchrun --standalone --nproc_per_node="$n" train_gpt.py $preset "$@"
