#!/usr/bin/env bash
# The GPU benchmarks and the paper recipes (issues #16, #17) in one command, on a GPU machine
# with torch, numpy and h5py but no MLflow, Prefect, DVC or network, from the repository root:
#
#   bash benchmarks/gpu_run.sh OUT PHASE...     # phases: step ensemble mechanisms recipes
#
# step: bench_gpu_step.py (one model: eager / compile / CUDA graphs / fused Adam, and a profile);
# ensemble: bench_ensemble.py (K = 1, 8, 32, 64; vmap and loop; CUDA graphs off and on);
# mechanisms (issue #29, at most 8 minutes): every mechanism (loop, vmap, bmm) at K = 1, 8, 32, 64
# for conv and MLP under CUDA graphs, with a profile of the fastest's kernels; then vmap (today's
# fastest, 2,260 member-steps/s on an H100) and bmm at K = 32 with compile and graphs, the ratio;
# recipes: gpu_recipes.py, the papers' recipes, with what is left of a 10-minute command
# (RESUME=DIR continues from the checkpoint parts in DIR). Each phase has its own time limit,
# so one that hangs cannot take the others' results with it. pydantic comes from .whl/ if the
# machine lacks it (the `pip download` line in BENCHMARKS.md).
set -uo pipefail
out="$1"; shift
mkdir -p "$out"
start=$SECONDS
if ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >/tmp/gpu.txt 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)" >>/tmp/gpu.txt 2>&1
cat /tmp/gpu.txt
for phase in "$@"; do
  echo "=== $phase at $((SECONDS - start)) s"
  case "$phase" in
    step)
      timeout 300 python3 benchmarks/bench_gpu_step.py --out "$out" --budget-s "${STEP_BUDGET:-200}" ;;
    ensemble)
      timeout 300 python3 benchmarks/bench_ensemble.py --device cuda --ks 1 8 32 64 --archs conv mlp \
        --mechanisms vmap loop --compile off --cuda-graphs off on --batch-size 64 --steps 40 \
        --warmup 10 --repeats 3 --images 737280 --budget-s "${ENSEMBLE_BUDGET:-150}" --out "$out" ;;
    mechanisms)
      common="--device cuda --batch-size 64 --steps 40 --warmup 10 --repeats 3 --images 737280"
      timeout 330 python3 benchmarks/bench_ensemble.py $common --ks 1 8 32 64 --archs conv mlp \
        --mechanisms loop vmap bmm --compile off --cuda-graphs on --budget-s 240 --profile \
        --out "$out/mechanisms"
      timeout 150 python3 benchmarks/bench_ensemble.py $common --ks 32 --archs conv \
        --mechanisms vmap bmm --compile on --cuda-graphs on --out "$out/mechanisms-compiled" ;;
    recipes)
      left=$(( ${CALL_LIMIT:-570} - (SECONDS - start) ))
      if (( left < 90 )); then echo "recipes: only $left s left, skipped"; continue; fi
      timeout $(( left - 5 )) python3 benchmarks/gpu_recipes.py --out "$out" --budget-s $(( left - 45 )) \
        ${RESUME:+--resume "$RESUME"} ;;
    *) echo "unknown phase $phase" ;;
  esac
  echo "=== $phase exit $? at $((SECONDS - start)) s"
done
