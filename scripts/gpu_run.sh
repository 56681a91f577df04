#!/usr/bin/env bash
# One prepared GPU run (issue 16): on a machine with an NVIDIA GPU and nothing else prepared, install the
# requirements, then measure every stage of the path at full scale per NFE (random weights: latency does not
# depend on values; 512x256 or 1024x576 per stage, 14 frames, batch 1, UNet only), fp16, torch eager and
# torch.compile, with svd-512 in the same interleaved run, and write the latency records.
#
#   bash scripts/gpu_run.sh                                  # everything, records -> checkpoints/latency/ and $OUT
#   bash scripts/gpu_run.sh --skip-install --budget-s 300    # python env ready; stop starting phases after 300 s
#   bash scripts/gpu_run.sh --skip-install --device cpu --scale micro --modes eager --records /tmp/r.json \
#        -- --size 64x32 --frames 4                        # the argument handling, on a CPU (after --: benchmark.py)
#
# Phases, each one scripts/benchmark.py call (its records are merged into the output as soon as it ends):
#   1. eager, every stage (the ratios that matter, first)   2. torch.compile, every stage (if the budget allows)
# A phase is started only when the remaining budget exceeds its estimate (--phase-s); a phase that runs past the
# budget is stopped by `timeout` and what the earlier phases wrote stays. Exit status: 0 when every started phase
# passed, 1 otherwise, 2 for bad arguments.
set -uo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

BUDGET_S=480          # 8 minutes in all, install included
PHASE_S=150           # what one benchmark phase is expected to take on an H100/H200-class GPU (estimate)
DEVICE=cuda
SCALE=full
DTYPE=fp16
WARMUP=3
RUNS=20
INSTALL=1
MODES="eager,compile"
RECORDS=""
EXTRA=()
OUT_DIR="${OUT:-}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --budget-s) BUDGET_S="${2:-}"; shift 2 ;;
    --phase-s) PHASE_S="${2:-}"; shift 2 ;;
    --device) DEVICE="${2:-}"; shift 2 ;;
    --scale) SCALE="${2:-}"; shift 2 ;;
    --dtype) DTYPE="${2:-}"; shift 2 ;;
    --warmup) WARMUP="${2:-}"; shift 2 ;;
    --runs) RUNS="${2:-}"; shift 2 ;;
    --out) OUT_DIR="${2:-}"; shift 2 ;;
    --records) RECORDS="${2:-}"; shift 2 ;;
    --modes) MODES="${2:-}"; shift 2 ;;
    --skip-install) INSTALL=0; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "gpu_run.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
for pair in "budget-s:$BUDGET_S" "phase-s:$PHASE_S" "warmup:$WARMUP" "runs:$RUNS"; do
  name="${pair%%:*}"; value="${pair#*:}"
  if ! [[ "$value" =~ ^[0-9]+$ ]]; then echo "gpu_run.sh: --$name takes a whole number, got '$value'" >&2; exit 2; fi
done
case "$SCALE" in full|tiny|micro) ;; *) echo "gpu_run.sh: --scale is full, tiny or micro, got '$SCALE'" >&2; exit 2 ;; esac
case "$DTYPE" in fp16|bf16|fp32) ;; *) echo "gpu_run.sh: --dtype is fp16, bf16 or fp32, got '$DTYPE'" >&2; exit 2 ;; esac
IFS=',' read -r -a MODE_LIST <<< "$MODES"
for m in "${MODE_LIST[@]}"; do
  case "$m" in eager|compile) ;; *) echo "gpu_run.sh: --modes is a comma list of eager, compile; got '$m'" >&2; exit 2 ;; esac
done

START=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
cd "$REPO" || exit 2
DEVICE_TYPE="${DEVICE%%:*}"
RECORDS="${RECORDS:-checkpoints/latency/${DEVICE_TYPE}-${SCALE}.json}"

if [[ "$INSTALL" == 1 ]]; then
  echo "[gpu_run] installing requirements ($(left) s left)"
  # on a CUDA machine the pinned torch wheel from PyPI is its CUDA build
  python -m pip install -q -r requirements.txt || { echo "[gpu_run] pip install failed" >&2; exit 1; }
fi
if [[ "$DEVICE_TYPE" == cuda ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/[gpu_run] gpu: /'
fi

status=0
phase() {  # phase NAME MODE
  local name="$1" mode="$2" remaining
  remaining=$(left)
  if (( remaining < PHASE_S )); then
    echo "[gpu_run] skipping phase '$name': ${remaining} s left, it needs about ${PHASE_S} s"
    return 0
  fi
  echo "[gpu_run] phase '$name' ($remaining s left)"
  timeout --signal=INT "$remaining" python scripts/benchmark.py --stages all --scale "$SCALE" --device "$DEVICE" \
    --dtype "$DTYPE" --mode "$mode" --warmup "$WARMUP" --runs "$RUNS" --checkpoints "" --out "$RECORDS" \
    --note "scripts/gpu_run.sh phase $name" "${EXTRA[@]}"
  local rc=$?
  if (( rc != 0 )); then echo "[gpu_run] phase '$name' ended with status $rc"; status=1; fi
}

for m in "${MODE_LIST[@]}"; do phase "$m" "$m"; done

if [[ -n "$OUT_DIR" ]]; then
  mkdir -p "$OUT_DIR" && { [[ ! -f "$RECORDS" ]] || cp "$RECORDS" "$OUT_DIR/"; }
fi
echo "[gpu_run] done in $(( $(date +%s) - START )) s; records: $RECORDS${OUT_DIR:+ (copied to $OUT_DIR)}"
exit $status
