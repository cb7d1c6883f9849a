#!/usr/bin/env bash
# Every GPU check of the project in one prepared run, for a session that is lent a GPU
# machine (about 15 minutes of device time in all, one command at most 10 minutes).
#
# 1. Here, once (the GPU machine sees only the repository, has no package registry and
#    lacks MONAI):
#        bash benchmarks/gpu_session.sh --prepare
#    copies ../shared/data into .gpu/data and downloads the MONAI wheel into .gpu/whl
#    (.gpu/ is ignored by git; about 30 MB).
# 2. On the GPU machine, through the device tool:
#        run(command="bash benchmarks/gpu_session.sh", carry=[".gpu"], timeout_s=600)
#    It runs, in this order, each stage cut to what is left of a 560 s deadline:
#      predict_speed  benchmarks/predict_speed.py --e2e-only, the paper's width, automatic
#                   tiles, 4096 px (with cProfile of one predict call) and 8192 px: the
#                   network fused and unfused, predict end to end fused and unfused (each
#                   figure is printed to session.log as it is measured)
#      tests          python -m pytest -m gpu tests/gpu (the CUDA code paths)
#      shipped        benchmarks/train_nuclei_model.py: a candidate for the shipped nuclei
#                     model (issue 4: "train the shipped model there when you can") at 32
#                     base channels on all 367 train/ images for at most 240 s, scored on
#                     val/, written as float16 (15.5 MB, under the package's 20 MB) to
#                     $OUT/nuclei_gpu.safetensors, so that it comes back to be fine-tuned
#                     and compared on the CPU (dsb_fewshot.py --pretrained FILE)
#      dsb            (with the time left) benchmarks/dsb_fewshot.py, the two-class model at the paper's
#                     width (64 base channels) from scratch on the 30 DSB images, at most
#                     150 s of training (issue 4's aim at the width a GPU trains)
#    and writes session.log and the benchmarks' JSON to $OUT (or benchmarks/out/gpu).
#    More stages, measured on an H200 on 2026-11-27 (benchmarks/RESULTS.md), run only
#    when named:
#      predict_full   benchmarks/predict_speed.py with every part: labels, MONAI, the fp32
#                     comparison (slow: cuDNN autotunes fp32 without TF32), a profile
#      train_speed    benchmarks/train_speed.py, 30 s of end-to-end training
#      isbi           benchmarks/isbi_membrane.py, 64 base channels, the time that is left
#    Name stages to run fewer or others: bash benchmarks/gpu_session.sh predict_speed tests
#
# DEVICE=cpu runs the same stages here with small budgets, to try the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  set -e
  mkdir -p .gpu/whl
  rm -rf .gpu/data && cp -r ../shared/data .gpu/data && chmod -R u+w .gpu/data
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp -d .gpu/whl "monai==1.6.1"
  du -sh .gpu
  exit 0
fi

DEVICE=${DEVICE:-cuda}
OUT=${OUT:-benchmarks/out/gpu}
mkdir -p "$OUT"
LOG="$OUT/session.log"
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(predict_speed tests shipped dsb)
DEADLINE=560
if [ "$DEVICE" = cpu ]; then  # a dry run of the script: small sizes and budgets
  SIZE=1024 TRAIN_SPEED=20 PROBE=5 ISBI_MAX=30 MODEL=nuclei WIDTH=16 TILES=0,512 DSB=30 SHIPPED=30 SHIPPED_WIDTH=8
  export NAPARI_UNET_TEST_DEVICE=cpu
else
  SIZE=4096 TRAIN_SPEED=30 PROBE=5 ISBI_MAX=100000 MODEL=random64 WIDTH=64 TILES=0
  DSB=150 SHIPPED=240 SHIPPED_WIDTH=32
fi

export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
[ -d .gpu/data ] && export NAPARI_UNET_DATA=.gpu/data
if ls .gpu/whl/*.whl >/dev/null 2>&1 && ! python3 -c "import monai" 2>/dev/null; then
  for w in .gpu/whl/*.whl; do python3 -m zipfile -e "$w" /tmp/site; done  # pure-Python wheels
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

{
  date -u
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} >"$LOG" 2>&1

left() { echo $((DEADLINE - SECONDS)); }

stage() {  # stage NAME MAX_SECONDS COMMAND...: run it for at most MAX_SECONDS or what is left
  local name=$1 max=$2 rc t0=$SECONDS
  shift 2
  local limit; limit=$(left)
  [ "$max" -lt "$limit" ] && limit=$max
  if [ "$limit" -lt 20 ]; then
    echo "== $name: not run, ${limit}s left" | tee -a "$LOG"
    return
  fi
  echo "== $name (at most ${limit}s): $*" | tee -a "$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0))s" | tee -a "$LOG"
}

budget_for() {  # budget_for NAME MAX RESERVE: BUDGET = a training's seconds, at most MAX and
  # what is left but RESERVE (loading, predicting, scoring); false, and said, under 30 s
  BUDGET=$(( $(left) - $3 ))
  [ "$BUDGET" -gt "$2" ] && BUDGET=$2
  [ "$BUDGET" -ge 30 ] && return 0
  echo "== $1: not run, $(left)s left" | tee -a "$LOG"
  return 1
}

for s in "${STAGES[@]}"; do
  case $s in
    tests)
      stage tests 150 python3 -m pytest -q -m gpu tests/gpu -p no:cacheprovider ;;
    predict_speed)
      stage predict_speed 100 python3 benchmarks/predict_speed.py --device "$DEVICE" \
        --model "$MODEL" --size "$SIZE" --tiles "$TILES" --batch-size 0 --e2e-only \
        --profile-predict --repeats 3 --out "$OUT/predict_speed_${DEVICE}_$SIZE.json"
      stage predict_speed_large 100 python3 benchmarks/predict_speed.py --device "$DEVICE" \
        --model "$MODEL" --size $((2 * SIZE)) --tiles "$TILES" --batch-size 0 --e2e-only \
        --repeats 2 --out "$OUT/predict_speed_${DEVICE}_$((2 * SIZE)).json" ;;
    predict_full)
      stage predict_full 240 python3 benchmarks/predict_speed.py --device "$DEVICE" \
        --model "$MODEL" --size "$SIZE" --tiles "$TILES" --batch-size 0 --halo 0 --profile \
        --out "$OUT/predict_speed_full_$DEVICE.json" ;;
    shipped)
      budget_for shipped "$SHIPPED" 60 && stage shipped $((BUDGET + 60)) python3 \
        benchmarks/train_nuclei_model.py --device "$DEVICE" --base-channels "$SHIPPED_WIDTH" \
        --half --time-budget "$BUDGET" --out "$OUT/nuclei_gpu.safetensors" ;;
    dsb)  # the models stay on the machine (/tmp)
      budget_for dsb "$DSB" 120 && stage dsb $((BUDGET + 120)) python3 \
        benchmarks/dsb_fewshot.py --device "$DEVICE" --targets two_class --pretrained "" \
        --base-channels "$WIDTH" --time-budget "$BUDGET" --models /tmp/dsb_models \
        --out "$OUT/dsb_fewshot_$DEVICE.json" ;;
    train_speed)
      stage train_speed 90 python3 benchmarks/train_speed.py --device "$DEVICE" \
        --time-budget "$TRAIN_SPEED" --probe-seconds "$PROBE" \
        --out "$OUT/train_speed_$DEVICE.json" ;;
    isbi)
      budget_for isbi "$ISBI_MAX" 70 && stage isbi $((BUDGET + 70)) python3 \
        benchmarks/isbi_membrane.py --device "$DEVICE" --base-channels "$WIDTH" \
        --time-budget "$BUDGET" --out "$OUT/isbi_$DEVICE.json" ;;
    *) echo "unknown stage $s (predict_speed, tests, shipped, dsb, predict_full, train_speed, isbi)" | tee -a "$LOG" ;;
  esac
done
echo "== done after ${SECONDS}s; files in $OUT" | tee -a "$LOG"
