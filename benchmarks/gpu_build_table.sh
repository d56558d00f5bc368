#!/usr/bin/env bash
# Full 10,000-image CIFAR-10 test table of resnet18_cifar (all 256 plans) with torchrun + NCCL, one process per GPU,
# timed; optionally compared with a reference table (prediction agreement) and checked against a one-process build
# of the first rows (same content hash).
#
# Usage (from the repository root, on a machine with CUDA GPUs):
#     OUT=/some/dir benchmarks/gpu_build_table.sh CHECKPOINT DATA [REFERENCE_TABLE]
#   CHECKPOINT       resnet18_sd_cifar10.pt (state dict)
#   DATA             cifar10-jpg.tgz (or a torchvision CIFAR-10 root)
#   REFERENCE_TABLE  optional table_test.npz to compare predictions with (reference layout or project format)
# Environment:
#   OUT              output directory (required): table_test.npz, pred_test.npz (the [N, P] uint8 predictions alone,
#                    small enough to copy back anywhere), summary.json, build.log, eq.log
#   NPROC            processes, one GPU each (default: all visible GPUs)
#   DEVICE           cuda (default) or cpu (a dry run of this script on a machine without a GPU)
#   BATCH_SIZE       images per prefix-sharing pass (default 1000)
#   LIMIT            first LIMIT test images (default: all 10,000)
#   FLOAT_DTYPE      loss / conf precision, float32 (default) or float16 (a table file half the size)
#   EQUALITY_ROWS    rows of the one-process vs torchrun equality check (default 1000; 0 skips it)
#   PYTHON           interpreter (default: python3)
#   WHEELS           optional directory of wheels to install first (pip --no-deps --no-index), for a machine without
#                    package index access; e.g. tyro, docstring_parser, typeguard, gymnasium, farama_notifications
# Needs: torch with CUDA, numpy, tqdm, pillow, tyro, gymnasium (the project's runtime imports); the checkout is put on
# PYTHONPATH, so `pip install -e .` is optional. The last line printed is the JSON summary.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: OUT=DIR $0 CHECKPOINT DATA [REFERENCE_TABLE]" >&2
  exit 2
fi
: "${OUT:?set OUT to the output directory}"
CKPT=$1
DATA=$2
REF=${3:-}
PY=${PYTHON:-python3}
BATCH_SIZE=${BATCH_SIZE:-1000}
EQUALITY_ROWS=${EQUALITY_ROWS:-1000}
LIMIT=${LIMIT:-}
DEVICE=${DEVICE:-cuda}
FLOAT_DTYPE=${FLOAT_DTYPE:-float32}
for f in "$CKPT" "$DATA" ${REF:+"$REF"}; do
  [[ -e "$f" ]] || { echo "error: $f does not exist" >&2; exit 2; }
done
[[ -f experiments/build_table.py ]] || { echo "error: run from the repository root" >&2; exit 2; }
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ -n "${WHEELS:-}" ]]; then
  "$PY" -m pip install --quiet --no-deps --no-index "$WHEELS"/*.whl
fi
export ADAINF_CACHE="${ADAINF_CACHE:-$(mktemp -d)}"  # decoded images: not under $OUT

"$PY" - "$DEVICE" <<'EOF'
import importlib.util, sys
missing = [m for m in ("torch", "numpy", "tqdm", "PIL", "tyro", "gymnasium") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"error: missing Python packages {missing} (pip install -e . or carry their wheels)")
import torch
if sys.argv[1] == "cuda":
    if not torch.cuda.is_available():
        sys.exit("error: torch sees no CUDA device")
    print(f"torch {torch.__version__}, {torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}")
else:
    print(f"torch {torch.__version__}, device {sys.argv[1]}")
EOF
if [[ "$DEVICE" == cuda ]]; then
  NPROC=${NPROC:-$("$PY" -c "import torch; print(torch.cuda.device_count())")}
else
  NPROC=${NPROC:-1}
fi
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC")
COMMON=(--backbone resnet18_cifar --checkpoint "$CKPT" --data "$DATA" --split test --device "$DEVICE"
        --batch-size "$BATCH_SIZE" --float-dtype "$FLOAT_DTYPE" --no-progress)

if [[ "$EQUALITY_ROWS" -gt 0 ]]; then
  echo "== equality check: first $EQUALITY_ROWS rows, one process vs torchrun ($NPROC process(es))"
  "$PY" experiments/build_table.py "${COMMON[@]}" --limit "$EQUALITY_ROWS" --out "$OUT/eq_one.npz" \
    2>&1 | tee "$OUT/eq.log"
  "${TORCHRUN[@]}" experiments/build_table.py "${COMMON[@]}" --limit "$EQUALITY_ROWS" --out "$OUT/eq_ddp.npz" \
    2>&1 | tee -a "$OUT/eq.log"
fi

echo "== full table: torchrun --nproc_per_node=$NPROC, batch $BATCH_SIZE${LIMIT:+, first $LIMIT images}"
t0=$(date +%s.%N)
"${TORCHRUN[@]}" experiments/build_table.py "${COMMON[@]}" ${LIMIT:+--limit "$LIMIT"} --out "$OUT/table_test.npz" \
  2>&1 | tee "$OUT/build.log"
t1=$(date +%s.%N)

"$PY" - "$OUT" "$t0" "$t1" "$EQUALITY_ROWS" "$REF" <<'EOF'
import json, sys
from pathlib import Path
import numpy as np
from adainf_env.tables.outcomes import codes_from_masks, load_table

out, t0, t1, eq_rows, ref = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
t = load_table(out / "table_test.npz", backbone="resnet18_cifar", split="test")
wall = t1 - t0
s = {"num_samples": t.num_samples, "num_plans": t.num_plans, "build": t.meta["build"],
     "wall_s_with_startup": round(wall, 2), "rows_per_s_with_startup": round(t.num_samples / wall, 1),
     "rows_per_s_build": round(t.num_samples / t.meta["build"]["seconds"], 1),
     "content_sha256": t.meta["content_sha256"],
     "full_plan_accuracy": float(t.accuracy_by_plan()[t.full_plan()])}
if eq_rows > 0:
    a, b = load_table(out / "eq_one.npz"), load_table(out / "eq_ddp.npz")
    s["equality_rows"] = eq_rows
    s["one_process_equals_torchrun"] = a.content_hash() == b.content_hash()
    s["first_rows_equal_full_table"] = bool(np.array_equal(a.pred, t.pred[:eq_rows]))
if ref:
    r = load_table(ref)
    n = min(r.num_samples, t.num_samples)
    pos = {int(c): i for i, c in enumerate(codes_from_masks(r.plan_masks))}
    missing = [int(c) for c in codes_from_masks(t.plan_masks) if int(c) not in pos]
    if missing:
        sys.exit(f"error: plans {missing[:5]} of the new table are not in the reference table")
    cols = np.array([pos[int(c)] for c in codes_from_masks(t.plan_masks)])
    same_rows = bool(np.array_equal(r.label[:n], t.label[:n]))
    agree = (t.pred[:n] == r.pred[:n][:, cols])
    s["reference"] = {"path": ref, "rows_compared": n, "labels_equal": same_rows,
                      "prediction_agreement": float(agree.mean()),
                      "min_agreement_over_plans": float(agree.mean(0).min()),
                      "full_plan_accuracy_reference": float(r.accuracy_by_plan()[r.full_plan()])}
np.savez_compressed(out / "pred_test.npz", pred=t.pred, label=t.label, plan_codes=codes_from_masks(t.plan_masks))
(out / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
print(json.dumps(s))
EOF
