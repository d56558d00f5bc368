#!/usr/bin/env bash
# The AdaInf scheduler trained live with the reference ResNet18 (frozen / LoRA / full fine-tuning), --preset gpu,
# 3 modes × SEEDS on one GPU, in ONE Python process (no per-run interpreter / CUDA start-up), then the combined
# figure and mean ± std tables. Run order seed-major (seed 0: none, lora, full; seed 1: …) so a run cut short by a
# time limit still leaves complete seeds. The table baselines (blockdrop, hinge: CPU fits on the 10k-row reference
# calib table) run once per seed, in the "none" run; lut and lut_upper in every run.
#
# Usage (from the repository root, the project installed with `pip install -e .`):
#     OUT=/some/dir benchmarks/gpu_finetune.sh DATA CHECKPOINT CALIB_INDICES REFERENCE_TABLES
#   DATA              cifar10-jpg.tgz
#   CHECKPOINT        resnet18_sd_cifar10.pt
#   CALIB_INDICES     calib_indices.npy (train images held out from the backbone's training)
#   REFERENCE_TABLES  directory with the original backbone's table_calib.npz / table_test.npz
# Environment:
#   OUT          output directory (required): runs/<mode>_s<seed>/, combined/, bench.log, timing.json
#   SEEDS        default "0 1 2"
#   MODES        default "none lora full"
#   EXTRA        extra options for every run, e.g. "--fit-images 10000 --epochs 1" (to fit a tighter time limit)
#   PYTHON       interpreter (default: python3)
#   DEVICE       cuda (default) or cpu (a dry run of this script on a machine without a GPU; pair it with small EXTRA)
# The last line printed is a JSON summary (per-run wall seconds, full-plan accuracy drop, selected step).
set -euo pipefail

if [[ $# -ne 4 ]]; then
  echo "usage: OUT=DIR $0 DATA CHECKPOINT CALIB_INDICES REFERENCE_TABLES" >&2
  exit 2
fi
: "${OUT:?set OUT to the output directory}"
DATA=$1
CKPT=$2
CALIB=$3
REF=$4
PY=${PYTHON:-python3}
SEEDS=${SEEDS:-0 1 2}
MODES=${MODES:-none lora full}
EXTRA=${EXTRA:-}
DEVICE=${DEVICE:-cuda}
for f in "$DATA" "$CKPT" "$CALIB" "$REF"; do
  [[ -e "$f" ]] || { echo "error: $f does not exist" >&2; exit 2; }
done
[[ -f experiments/hinge_finetune_resnet18.py ]] || { echo "error: run from the repository root" >&2; exit 2; }
mkdir -p "$OUT"
export ADAINF_CACHE="${ADAINF_CACHE:-$(mktemp -d)}"  # decoded images: not under $OUT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - "$OUT" "$DATA" "$CKPT" "$CALIB" "$REF" "$SEEDS" "$MODES" "$EXTRA" "$DEVICE" <<'PYEOF' 2>&1 | tee "$OUT/bench.log"
import json, shlex, sys, time
from pathlib import Path

import torch

device = sys.argv[9]
if device == "cuda":
    if not torch.cuda.is_available():
        sys.exit("error: torch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = True  # convolutions already use TF32 by default (cudnn.allow_tf32)
    print(f"torch {torch.__version__}, GPU {torch.cuda.get_device_name(0)}", flush=True)
else:
    print(f"torch {torch.__version__}, device {device} (dry run)", flush=True)

from adainf_lab.cli import parse_config
from adainf_lab.finetune import FinetuneConfig, combine_runs, run_finetune

out, data, ckpt, calib, ref, seeds, modes, extra = sys.argv[1:9]
out = Path(out)
timing, dirs = [], []
t_all = time.perf_counter()
for seed in seeds.split():
    for mode in modes.split():
        run = out / "runs" / f"{mode}_s{seed}"
        argv = ["--preset", "gpu", "--finetune", mode, "--seed", seed, "--data", data, "--checkpoint", ckpt,
                "--calib-indices", calib, "--reference-tables", ref, "--device", device, "--out", str(run),
                "--baselines", *(["lut", "lut_upper", "blockdrop", "hinge"] if mode == "none" else ["lut", "lut_upper"]),
                *shlex.split(extra)]
        t0 = time.perf_counter()
        s = run_finetune(parse_config(FinetuneConfig, argv, raise_errors=True))
        wall = time.perf_counter() - t0
        dirs.append(run)
        timing.append({"mode": mode, "seed": int(seed), "wall_s": round(wall, 1), "stages": s["stages"],
                       "full_plan_drop_pt": s["full_plan_drop_pt"], "selected_step": s["selected_step"],
                       "steps": s["steps"], "train_images_per_s": s["train_images_per_s"]})
        print(f"== {mode} seed {seed}: {wall:.1f} s", flush=True)
combine_runs(dirs, out / "combined")
doc = {"total_wall_s": round(time.perf_counter() - t_all, 1), "runs": timing}
(out / "timing.json").write_text(json.dumps(doc, indent=2) + "\n")
print(json.dumps(doc))
PYEOF
