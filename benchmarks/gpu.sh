#!/usr/bin/env bash
# The GPU benchmarks in one command, about 5 minutes on one recent NVIDIA GPU (at most 6:15, the
# sum of the per-part limits): engine (compute_interactions vs the bare forwards) on small models
# and on BERT-base / ViT-B/16, the AND-OR solver, tracking overhead.
#
#   bash benchmarks/gpu.sh                  # uses .venv/bin/python when present, else python3
#   PYTHON=python DEVICE=cuda:1 bash benchmarks/gpu.sh
#
# Each benchmark has its own time limit, so one slow part cannot eat the whole budget. The
# overhead table goes to BENCHMARKS_overhead_gpu.md, to be merged into BENCHMARKS.md with the GPU named.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DEVICE="${DEVICE:-cuda}"

"$PYTHON" - "$DEVICE" <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"benchmarks/gpu.sh needs a CUDA GPU, but torch {torch.__version__} sees none "
             "(install a CUDA build: make demo TORCH=...)")
device = torch.device(sys.argv[1])
print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

# A part that fails or runs out of time is reported, and the next one still runs.
failed=0
run() {
    local limit=$1; shift
    echo; echo "== $* (limit ${limit}s)"
    local status=0
    timeout "$limit" "$PYTHON" "$@" || status=$?
    if (( status != 0 )); then
        if (( status == 124 )); then echo "== STOPPED at its ${limit} s limit: $*"; else echo "== FAILED (exit status $status): $*"; fi
        failed=1
    fi
}

start=$SECONDS
run 45 benchmarks/engine.py --device "$DEVICE" --repeats 5
run 90 benchmarks/and_or.py --device "$DEVICE"
run 150 benchmarks/overhead.py --device "$DEVICE" --repeats 1 --output BENCHMARKS_overhead_gpu.md
run 90 benchmarks/real_models.py --device "$DEVICE"
echo; echo "GPU benchmarks done in $((SECONDS - start)) s."
exit "$failed"
