#!/usr/bin/env bash
# EBHI-Seg on the CPU, split by case: the three architectures on the paper-like 3-class mapping and
# ResNet50 on the six EBHI classes, quick preset at 112 px, 20 epochs with the rate lowered tenfold
# after epochs 12 and 17, every class drawn equally often (--balance sampler). Cases are split
# 60/20/20: the validation cases pick best.pt (balanced accuracy), the test cases are only used by
# `crc evaluate` (then `crc compare`: Tables 3 and 4). ~1 h on 2 idle cores.
# Usage: benchmarks/ebhi_cpu_runs.sh [RUNS_DIR] (default runs/ebhi-cpu); EPOCHS, MILESTONES, SIZE to change.
set -u
cd "$(dirname "$0")/.."
R="${1:-runs/ebhi-cpu}"
mkdir -p "$R"
CRC="${CRC:-.venv/bin/crc}"
DATA="${CRC_SHARED_DATA:-../shared/data}/ebhi/labels.csv"
EPOCHS="${EPOCHS:-20}"
MILESTONES="${MILESTONES:-12,17}"
SIZE="${SIZE:-112}"
COMMON=(--label-column ebhi_class --group-column case_id --group-pattern '\d{7}')
TRAIN=(--preset quick --epochs "$EPOCHS" --image-size "$SIZE" --batch-size 32 --device cpu
       --val-fraction 0.2 --test-fraction 0.2
       --milestones "$MILESTONES" --balance sampler --best-metric balanced_acc --half-checkpoint --quiet)
THREE=(--classes "Normal,Low-grade IN,High-grade IN,Adenocarcinoma"
       --map "Low-grade IN=Adenoma,High-grade IN=Adenoma")
log() { echo "[$(date +%T)] $*" | tee -a "$R/runs.log"; }

run() {  # name arch [extra data options...]
    local name=$1 arch=$2; shift 2
    log "train $name"
    local t0=$SECONDS
    "$CRC" train --data "$DATA" "${COMMON[@]}" "$@" --arch "$arch" "${TRAIN[@]}" \
        --out "$R/$name" >"$R/$name.train.json" 2>>"$R/runs.log" || { log "train $name failed"; return; }
    log "train $name done in $((SECONDS - t0)) s"
    "$CRC" evaluate --checkpoint "$R/$name/best.pt" --data "$DATA" --name "$arch" --quiet \
        --out "$R/$name-eval" >"$R/$name.eval.json" 2>>"$R/runs.log" || log "evaluate $name failed"
    rm -f "$R/$name/last.pt"
}

run ebhi3-resnet50 resnet50 "${THREE[@]}"
run ebhi3-densenet121 densenet121 "${THREE[@]}"
run ebhi3-inception_v3 inception_v3 "${THREE[@]}"
"$CRC" compare "$R/ebhi3-resnet50-eval" "$R/ebhi3-densenet121-eval" "$R/ebhi3-inception_v3-eval" \
    --out "$R/compare-ebhi3" 2>>"$R/runs.log" && log "compare -> $R/compare-ebhi3"
run ebhi6-resnet50 resnet50
log "all done"
