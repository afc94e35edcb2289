#!/usr/bin/env bash
# GPU check for training (Qt-free): the throughput bench at 400 px and a real EBHI training run with
# evaluation, on one GPU, in under 10 minutes. Results go to the folder given as $1, else $OUT, else
# ./gpu_check_out. Needs the EBHI tiles: $CRC_SHARED_DATA/ebhi (default ../shared/data/ebhi).
set -u
cd "$(dirname "$0")/.."
DEST="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$DEST"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
DATA="${CRC_SHARED_DATA:-../shared/data}/ebhi/labels.csv"
LOG="$DEST/gpu_check.log"
say() { echo "[gpu_check $(date +%T)] $*" | tee -a "$LOG"; }

say "python: $PY; data: $DATA"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>&1 | tee -a "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG" || true
if [ ! -f "$DATA" ]; then say "EBHI tiles not found at $DATA: set CRC_SHARED_DATA"; exit 2; fi

# 1) Throughput: end-to-end fit vs bare step, 400 px, batch 32, three architectures (~3 min).
say "train_bench (400 px, batch 32)"
timeout 240 "$PY" benchmarks/train_bench.py --device cuda --size 400 --batch 32 --images 1024 \
    --epochs 2 --steps 30 --out "$DEST/train_bench.json" 2>>"$LOG" | tail -n 40
say "train_bench rc=$?"

# 2) Real data: ResNet50, paper preset (200 epochs, milestones 80/120/160/180), EBHI split by case,
#    3-class mapping Normal / Adenoma / Adenocarcinoma at 224 px (~3 min on a current GPU).
CLS="Normal,Low-grade IN,High-grade IN,Adenocarcinoma"
MAP="Low-grade IN=Adenoma,High-grade IN=Adenoma"
RUN="$DEST/ebhi3-resnet50-paper"
say "crc train resnet50 paper preset, 3 classes"
timeout 300 "$PY" -m crc_core.cli train --data "$DATA" --label-column ebhi_class --group-column case_id \
    --classes "$CLS" --map "$MAP" --arch resnet50 --preset paper --image-size 224 --device cuda \
    --half-checkpoint --quiet --out "$RUN" >"$DEST/train_ebhi3.json" 2>>"$LOG"
say "train rc=$?"
if [ -f "$RUN/best.pt" ]; then
    "$PY" -m crc_core.cli evaluate --checkpoint "$RUN/best.pt" --data "$DATA" --out "$DEST/eval-ebhi3-resnet50" \
        --device cuda --quiet >"$DEST/eval_ebhi3.json" 2>>"$LOG"
    say "evaluate rc=$?"
    cat "$DEST/eval-ebhi3-resnet50/table3.md" "$DEST/eval-ebhi3-resnet50/table4.md" 2>/dev/null | tee -a "$LOG"
    # The run's history and evaluation come back; the checkpoints stay small enough (fp16 best.pt).
    rm -f "$RUN/last.pt"
fi
# 3) Prediction: end-to-end windows/s on a generated 16k pyramidal slide vs bare ResNet50 forward (~2 min).
say "predict_bench (resnet50, 16384 px slide, batch 256)"
timeout 240 "$PY" benchmarks/predict_bench.py --device cuda --size 16384 --batch-size 256 --workers 14 \
    --repeats 2 >"$DEST/predict_bench.json" 2>>"$LOG"; say "predict_bench rc=$?"; cat "$DEST/predict_bench.json" | tee -a "$LOG"
say "done"
