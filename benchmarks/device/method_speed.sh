#!/usr/bin/env bash
# Every method's epoch at CMU-MOSEI's scale on the GPU, in one call of the device tool (issue 34
# item 4). The device machine's Python has torch and every dependency of imsa, and the benchmark
# makes its own synthetic data of MOSEI's shapes, so nothing needs carrying: run with the device
# tool: command "bash benchmarks/device/method_speed.sh", timeout_s 560.
# Everything it measures comes back under $OUT; commit the two files it writes as
# benchmarks/results/method_speed_cuda.{json,md}.
set -o pipefail
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/cache
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
# Two sizes up to MOSEI's training split, in one process on one generated dataset; the slow
# methods last, each case stopped after 120 s and none started after 420 s, so one slow method
# cannot use up the call. CENET and TFR-Net read precomputed text here (synthetic data has no words).
cd benchmarks && timeout 530 python3 method_speed.py --device cuda --threads 4 --sizes 4000 16326 --timeout 120 --deadline 420 \
    --methods late_fusion early_fusion tfn lmf misa self_mm mmim almt cenet tetfn tfr_net mult gcnet mmin lnln prmf mplmm cmad momke hme dicmor imder \
    --set cenet.text_encoder= --set tfr_net.text_encoder= \
    --out "$OUT/method_speed_cuda" 2>&1 | tee "$OUT/method_speed_cuda.txt"
