#!/usr/bin/env bash
# GPU check for issue 5/6 (Qt-free), within one 10-minute device call:
#   1. benchmarks/train_bench.py: end-to-end training images/s vs the bare step, 400 px, three archs;
#   2. a real EBHI-Seg run: ResNet50, paper preset (200 epochs, lr drops after 80/120/160/180),
#      3 classes (Normal / Adenoma = LGIN + HGIN / Adenocarcinoma), cases split 60/20/20, then
#      `crc evaluate` on the test cases;
#   3. benchmarks/predict_bench.py: whole-slide prediction windows/s vs the bare forward pass;
#   4. while time is left: DenseNet121 (224 px) and InceptionV3 (299 px, auxiliary head) with the
#      paper preset, evaluated, and `crc compare` of the evaluated models.
# Every step has a time cap inside DEADLINE_S (default 560 s). Results go to the folder $1 (else $OUT,
# else ./gpu_check_out) as at most five files: gpu_check.log, summary.md, train_bench.json,
# predict_bench.json and results.tar.gz (histories, metrics.json, Tables 3/4, plots, report.html; no
# checkpoints). Data: $CRC_SHARED_DATA/ebhi/labels.csv (default ../shared/data).
# On the lent machine: see benchmarks/prepare_gpu_check.sh (wheels and a compact copy of EBHI to carry).
# Rehearsal on a CPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 benchmarks/gpu_check.sh /tmp/gpu_check_smoke
set -u
cd "$(dirname "$0")/.."
START=$SECONDS
DEADLINE=$(( START + ${DEADLINE_S:-560} ))
DEST="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
WORK="${GPU_CHECK_WORK:-$(mktemp -d /tmp/crc_gpu_check.XXXXXX)}"
mkdir -p "$WORK"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
SMOKE="${GPU_CHECK_SMOKE:-0}"
DATA="${CRC_SHARED_DATA:-../shared/data}/ebhi/labels.csv"
LOG="$DEST/gpu_check.log"
export PYTHONUNBUFFERED=1
say() { echo "[gpu_check +$(( SECONDS - START ))s] $*" | tee -a "$LOG"; }
# cap SECONDS RESERVE -> the seconds a step may take: min(cap, time left - reserve), at least 1
cap() { local c=$1 r=$2 l=$(( DEADLINE - SECONDS - $2 )); [ "$l" -lt "$c" ] && c=$l; [ "$c" -lt 1 ] && c=1; echo "$c"; }
crc() { "$PY" -m crc_core.cli "$@"; }

say "python $PY, device $DEVICE, smoke $SMOKE, data $DATA, work $WORK"
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '', 'cudnn', torch.backends.cudnn.version())" 2>&1 | tee -a "$LOG"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
fi
if [ ! -f "$DATA" ]; then say "EBHI tiles not found at $DATA: set CRC_SHARED_DATA"; exit 2; fi

THREE=(--classes "Normal,Low-grade IN,High-grade IN,Adenocarcinoma" --map "Low-grade IN=Adenoma,High-grade IN=Adenoma")
# Split by case number, 60/20/20: validation picks best.pt, `crc evaluate` reports on the test cases.
COLS=(--label-column ebhi_class --group-column case_id --group-pattern '\d{7}' --val-fraction 0.2
      --test-fraction 0.2)
if [ "$SMOKE" = 1 ]; then
    # A few tiles per class and case, 64 px, one epoch: the mechanics, not the numbers.
    "$PY" - "$DATA" "$WORK/smoke.csv" <<'PY'
import csv, sys
from collections import Counter
from pathlib import Path
src, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = list(csv.DictReader(open(src, newline="")))
seen = Counter(); keep = []
for r in rows:
    key = (r["ebhi_class"], r["case_id"])
    if seen[key] < 2 and sum(v for (c, _), v in seen.items() if c == r["ebhi_class"]) < 16:
        seen[key] += 1
        keep.append({**r, "image": str((src.parent / r["image"]).resolve())})
with open(out, "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=["image", "ebhi_class", "case_id"], extrasaction="ignore")
    w.writeheader(); w.writerows(keep)
PY
    DATA="$WORK/smoke.csv"
    BENCH=(--archs resnet50 --size 64 --batch 4 --images 16 --epochs 2 --steps 2 --threads 2)
    PAPER=(--preset quick --epochs 2 --batch-size 8 --save-every 2)
    SIZE224=(--image-size 64); SIZE299=(--image-size 80)
    PRED=(--size 2048 --batch-size 8 --workers 2 --repeats 1 --threads 2)
else
    BENCH=(--size 400 --batch 32 --images 512 --epochs 2 --steps 20)
    PAPER=(--preset paper --save-every 25)
    SIZE224=(--image-size 224); SIZE299=(--image-size 299)
    PRED=(--size 16384 --batch-size 256 --workers 14 --repeats 2)
fi

# 1) Training throughput (~2 min on an H200).
say "train_bench ${BENCH[*]}"
timeout "$(cap 150 330)" "$PY" benchmarks/train_bench.py --device "$DEVICE" "${BENCH[@]}" \
    --out "$DEST/train_bench.json" >>"$LOG" 2>&1
say "train_bench rc=$?"

train_eval() {  # name arch cap reserve size-args...
    local name=$1 arch=$2 c=$3 r=$4; shift 4
    local t; t=$(cap "$c" "$r")
    if [ "$t" -lt 30 ]; then say "skip $name: ${t}s left"; return; fi
    say "train $name (cap ${t}s)"
    local t0=$SECONDS
    timeout -s INT "$t" "$PY" -m crc_core.cli train --data "$DATA" "${COLS[@]}" "${THREE[@]}" \
        --arch "$arch" "${PAPER[@]}" "$@" --device "$DEVICE" --half-checkpoint --quiet \
        --out "$WORK/$name" >"$WORK/$name.train.json" 2>>"$LOG"
    say "train $name rc=$? in $(( SECONDS - t0 ))s; epochs done: $(( $(wc -l <"$WORK/$name/history.csv" 2>/dev/null || echo 1) - 1 ))"
    if [ -f "$WORK/$name/best.pt" ]; then
        timeout 60 "$PY" -m crc_core.cli evaluate --checkpoint "$WORK/$name/best.pt" --data "$DATA" \
            --device "$DEVICE" --name "$arch" --quiet --out "$WORK/$name-eval" \
            >"$WORK/$name.eval.json" 2>>"$LOG"
        say "evaluate $name rc=$?"
    fi
    rm -f "$WORK/$name/last.pt" "$WORK/$name/best.pt"
}

# 2) The real EBHI run with the paper schedule (~2-3 min on an H200).
train_eval ebhi3-resnet50 resnet50 240 150 "${SIZE224[@]}"

# 3) Prediction throughput (~1 min).
say "predict_bench ${PRED[*]}"
timeout "$(cap 90 60)" "$PY" benchmarks/predict_bench.py --device "$DEVICE" "${PRED[@]}" \
    >"$DEST/predict_bench.json" 2>>"$LOG"
say "predict_bench rc=$?"

# 4) The other two architectures while time is left.
train_eval ebhi3-densenet121 densenet121 240 100 "${SIZE224[@]}"
train_eval ebhi3-inception_v3 inception_v3 240 40 "${SIZE299[@]}"
evals=(); for d in "$WORK"/ebhi3-*-eval; do [ -f "$d/metrics.json" ] && evals+=("$d"); done
if [ "${#evals[@]}" -ge 2 ]; then
    "$PY" -m crc_core.cli compare "${evals[@]}" --out "$WORK/compare" >>"$LOG" 2>&1; say "compare rc=$?"
fi

# Results: summary.md and one archive (no checkpoints).
"$PY" - "$WORK" "$DEST" <<'PY' 2>>"$LOG"
import csv, json, sys
from pathlib import Path
work, dest = Path(sys.argv[1]), Path(sys.argv[2])
lines = ["# GPU check results", ""]
tb = dest / "train_bench.json"
if tb.is_file():
    try:
        d = json.loads(tb.read_text())
        lines += ["## Training throughput (train_bench)", "", "```", json.dumps(d, indent=1)[:4000], "```", ""]
    except ValueError:
        lines += ["train_bench.json unreadable", ""]
pb = dest / "predict_bench.json"
if pb.is_file() and pb.stat().st_size:
    lines += ["## Prediction throughput (predict_bench)", "", "```", pb.read_text()[:3000], "```", ""]
for run in sorted(p for p in work.glob("ebhi3-*") if p.is_dir() and not p.name.endswith("-eval")):
    hist = run / "history.csv"
    rows = list(csv.DictReader(open(hist))) if hist.is_file() else []
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    secs = sum(float(r["seconds"]) for r in rows)
    lines += [f"## {run.name}", "", f"epochs done {len(rows)} of {cfg.get('epochs')}, "
              f"{secs:.0f} s, image size {cfg.get('image_size')}, batch {cfg.get('batch_size')}", ""]
    if rows:
        last = rows[-1]
        lines += [f"last epoch: " + ", ".join(f"{k} {last[k]}" for k in last), ""]
    ev = work / f"{run.name}-eval"
    for t in ("table3.md", "table4.md"):
        if (ev / t).is_file():
            lines += [(ev / t).read_text(), ""]
for t in ("table3.md", "table4.md"):
    if (work / "compare" / t).is_file():
        lines += ["## compare: " + t, "", (work / "compare" / t).read_text(), ""]
(dest / "summary.md").write_text("\n".join(lines))
PY
tar -C "$WORK" --exclude='*.pt' -czf "$DEST/results.tar.gz" . 2>>"$LOG"
say "done: $(ls "$DEST" | tr '\n' ' ')"
