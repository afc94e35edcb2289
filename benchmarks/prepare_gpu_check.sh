#!/usr/bin/env bash
# Prepare what benchmarks/gpu_check.sh needs on the lent GPU machine, which has Python 3.12 with torch,
# torchvision, numpy, pillow, scikit-image, scikit-learn, matplotlib and tifffile, but no registry,
# no openslide, shapely, defusedxml or platformdirs, and which receives only the working tree
# (64 MiB at most: ../shared does not travel). Run here, once per session:
#
#   benchmarks/prepare_gpu_check.sh
#
# It writes two ignored folders to carry:
#   .whl/      cp312 manylinux wheels of the missing packages (~5 MB)
#   .gpudata/  ebhi/labels.csv and the 1,559 EBHI-Seg tiles re-encoded as JPEG q85 (~40 MB; the
#              originals are 64 MB); the gland masks are left out
# and prints the device call. The tracked demo model (models/demo_densenet121_3class.pt, 14 MB) does
# not fit beside them: the call's command must not need it, and it is moved aside (skip-worktree)
# for the call and put back afterwards (`benchmarks/prepare_gpu_check.sh --restore`).
set -eu
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
MODEL=models/demo_densenet121_3class.pt
ASIDE=/tmp/crc_demo_model_aside.pt
if [ "${1:-}" = "--restore" ]; then
    [ -f "$ASIDE" ] && mv "$ASIDE" "$MODEL"
    git update-index --no-skip-worktree "$MODEL"
    git status --short "$MODEL"; echo "restored $MODEL"; exit 0
fi
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for pkg in openslide-python openslide-bin shapely defusedxml platformdirs; do
    ver=$("$PY" -c "import importlib.metadata as m; print(m.version('$pkg'))")
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${plat[@]}" -d .whl "$pkg==$ver" 2>&1 | grep -v "is ignored" || true
done
"$PY" - <<'PY'
import csv, os
from pathlib import Path
from PIL import Image
src = Path(os.environ.get("CRC_SHARED_DATA", "../shared/data")) / "ebhi"
dst = Path(".gpudata/ebhi")
rows = list(csv.DictReader(open(src / "labels.csv", newline="")))
for r in rows:
    out = dst / r["image"]
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(src / r["image"]).convert("RGB").save(out, "JPEG", quality=85)
with open(dst / "labels.csv", "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=["image", "ebhi_class", "case_id"], extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
print(f"{len(rows)} tiles in {dst}")
PY
git update-index --skip-worktree "$MODEL"
[ -f "$MODEL" ] && mv "$MODEL" "$ASIDE"
du -sh .whl .gpudata
echo "tree that travels: $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes tracked + carried above"
cat <<'TXT'
Device call (run tool), then `benchmarks/prepare_gpu_check.sh --restore`:
  carry: [".whl", ".gpudata"]   timeout_s: 600
  command: python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; CRC_SHARED_DATA=.gpudata PYTHON=python3 bash benchmarks/gpu_check.sh "$OUT"
TXT
