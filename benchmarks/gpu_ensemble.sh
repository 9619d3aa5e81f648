#!/usr/bin/env bash
# The GPU benchmark of issue #16 in one command, on a machine with torch, numpy and h5py but no
# MLflow, Prefect, DVC or network (the device tool's H100/H200):
#
#   bash benchmarks/gpu_ensemble.sh [OUT_FOLDER]        # from the repository root
#
# bvae's configs need pydantic; if the machine lacks it, carry its wheels in .whl/ (made here
# with the `pip download` line in BENCHMARKS.md) and this installs them into /tmp/site.
# Writes OUT_FOLDER/results.json (default: $OUT, else ./bench-gpu): member-steps/s of K single
# runs one after another and of K-member ensembles (vmap and loop; eager and torch.compile),
# conv and MLP, K in 1 8 32 64, and GPU memory per member.
set -euo pipefail
out="${1:-${OUT:-bench-gpu}}"
if ! python3 -c "import pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 benchmarks/bench_ensemble.py --device cuda --ks 1 8 32 64 --archs conv mlp \
  --mechanisms vmap loop --compile off on --batch-size 64 --steps 50 --warmup 20 --repeats 3 \
  --images 737280 --out "$out"
