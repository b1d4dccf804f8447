#!/usr/bin/env bash
# The GPU checks and measurements in one go, on a machine with an NVIDIA GPU; results go to $OUT (default
# ./gpu-results).  Sections (all by default; name some to run only those, each fits a short lease):
#   tests        the CUDA tests: maps on CUDA against the CPU, CUDA graphs, fp16, TensorRT where present, incremental
#                inference on the device against full forwards
#   table        `infolens perf --table` (EfficientNet-Lite0 and ResNet-50 × batch 64/256/1024 × plain, fp16, CUDA
#                graphs, TensorRT), the paper's setting (K=8, S=1, N=8) and the agreement of the options' maps
#   incremental  docs/performance.md's incremental table on CUDA: `--incremental off` and `on`, each run with its own
#                raw CUDA figure (IO binding), EfficientNet-Lite0 and the seeded ResNet-50, K=8 and K=16
# Needs onnxruntime-gpu importable (pip install -e ".[gpu,dev]"; or a wheel unpacked with --target and put first on
# PYTHONPATH, as on a machine without registry access: docs/install.md, "Machines without registry access").
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
} 2>&1 | tee "$OUT/machine.txt"
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
SECTIONS="${*:-tests table incremental}"
if want tests; then
  $PY -m pytest -q -rs tests/backends/test_cuda.py tests/backends/test_gpu_options.py tests/backends/test_composer.py \
      2>&1 | tee "$OUT/tests.txt" | tail -15
fi
if want table; then
  $PY -m infolens.perf --device cuda --table --seconds ${SECONDS_PER_CELL:-3} 2>&1 | tee "$OUT/table.md"
  $PY -m infolens.perf --device cuda --paper --cuda-graph --batch-size 1024 2>&1 | tee "$OUT/paper.txt"
  $PY -m infolens.perf --device cuda --paper --batch-size 256 2>&1 | tee -a "$OUT/paper.txt"
  $PY -m infolens.perf --agreement examples/coffee.png examples/chelsea.png \
      --configs cpu,cuda,cuda+graph,cuda+fp16,cuda+fp16+graph,cuda+trt 2>&1 | tee "$OUT/agreement.md"
fi
if want incremental; then
  RESNET=$($PY -c "from infolens.perf.resnet50 import resnet50_file; print(resnet50_file())")
  for setting in "-K 8 -S 4 -N 8" "-K 16 -S 16 -N 8" "--model $RESNET -K 8 -S 8 -N 8" "--model $RESNET -K 16 -S 16 -N 8"; do
    for mode in off on; do
      echo "== $setting --incremental $mode"
      $PY -m infolens.perf --device cuda $setting --rounds 2 --incremental $mode 2>&1 \
          | grep -E "^(machine|incremental|raw ORT|end-to-end|ratio)"
    done
  done 2>&1 | tee "$OUT/incremental.txt"
fi
