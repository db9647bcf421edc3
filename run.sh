#!/usr/bin/env bash
# ./run.sh [--field=value ...]: train on every visible GPU with torchrun, fetching FineWeb first if it is missing.
# Without --preset, the preset is picked from the hardware: a GPU under 40 GB -> 4090, otherwise record
# (the 8xH100 math; fewer GPUs accumulate gradients to the same global batch).
set -euo pipefail
cd "$(dirname "$0")"
gpus=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null || true)
if [ -z "$gpus" ]; then
    echo "run.sh: no NVIDIA GPU visible (nvidia-smi lists none), so no run was started. For a CPU smoke run"
    echo "(a tiny model, about two minutes):  python cached_fineweb10B.py 1 && python train_gpt.py --preset=cpu"
    exit 0
fi
if ! ls data/fineweb10B/fineweb_train_*.bin >/dev/null 2>&1 && [[ " $* " != *" --train_files="* ]]; then
    python3 cached_fineweb10B.py 9  # the val shard + 900M training tokens
fi
n=$(echo "$gpus" | wc -l)
preset=()
if [[ " $* " != *" --preset="* ]]; then
    min_mib=$(echo "$gpus" | sort -n | head -1)
    if [ "$min_mib" -lt 40000 ]; then name=4090; else name=record; fi
    echo "run.sh: $n GPU(s), the smallest with $min_mib MiB -> --preset=$name"
    preset=(--preset=$name)
fi
# a fresh rendezvous store for each restart if --max_restarts is added (pytorch issue #135712)
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
exec torchrun --standalone --nproc_per_node="$n" train_gpt.py "${preset[@]}" "$@"
