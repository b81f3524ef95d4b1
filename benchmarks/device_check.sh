#!/usr/bin/env bash
# The accelerator check, one command (<= 8 minutes on one GPU or TPU chip): for bfloat16 and
# float32 compute, at 256 px, the chip's measured peaks, inference images/s and batch-1
# latency, train-step images/s at two batch sizes, the fraction of the roofline bound reached
# (XLA's cost analysis) and XLA's memory analysis per program (GB per device).
#
#   bash benchmarks/device_check.sh            # writes benchmarks/results/device_check_*.json
#   SMALL=1 bash benchmarks/device_check.sh    # any machine, a minute: the small model
set -euo pipefail
cd "$(dirname "$0")/.."
args=(--batch=1024 --train_batches=64,256 --repeats=10)
[ "${SMALL:-0}" = 1 ] && args=(--small)
echo "device: $(python -c 'import jax; d = jax.devices()[0]; print(jax.default_backend(), d.device_kind, len(jax.devices()), "device(s)")')"
for dtype in bfloat16 float32; do
  start=$SECONDS
  python benchmarks/roofline.py --dtype=$dtype "${args[@]}" \
    --output=benchmarks/results/device_check_$dtype.json
  echo "device_check: $dtype took $((SECONDS - start)) s"
done
