#!/usr/bin/env bash
# Every method's epoch at CMU-MOSEI's scale on the GPU, in one call of the device tool (issue 34
# item 4). Prepare the wheels as benchmarks/device/gpu_check.sh says (no data is needed: the
# benchmark makes synthetic data of MOSEI's shapes), then run with the device tool:
# carry [".gpu"], command "bash benchmarks/device/method_speed.sh", timeout_s 540.
# Everything it measures comes back under $OUT; commit the two files it writes as
# benchmarks/results/method_speed_cuda.{json,md}.
set -o pipefail
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/cache
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# Three sizes up to MOSEI's training split; each case has 150 s, so one slow method cannot use up the call.
cd benchmarks && timeout 500 python3 method_speed.py --device cuda --threads 4 --sizes 2000 8000 16326 --timeout 150 \
    --out "$OUT/method_speed_cuda" 2>&1 | tee "$OUT/method_speed_cuda.txt"
