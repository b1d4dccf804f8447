#!/usr/bin/env bash
# Issue #11's GPU checks and measurements, in one go, on a machine with an NVIDIA GPU:
#   tests/test_cuda.py (maps on CUDA against the CPU, CUDA graphs, fp16, TensorRT where present), then the bench's
#   table (EfficientNet-Lite0 and ResNet-50 × batch 64/256/1024 × plain/fp16/CUDA graphs/TensorRT), the paper's
#   setting (K=8, S=1, N=8) and the agreement of the options' maps.  Results go to $OUT (default ./gpu-results).
# Needs onnxruntime-gpu importable (pip install -e ".[gpu,dev]"; or a wheel unpacked with --target and put first on
# PYTHONPATH, as on a machine without registry access: see the README's "Measuring on a GPU").
set -u
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
} 2>&1 | tee "$OUT/machine.txt"
$PY -m pytest -q -rs tests/test_cuda.py tests/test_gpu_options.py tests/test_composer.py 2>&1 | tee "$OUT/tests.txt" | tail -15
$PY -m infolens.bench --device cuda --table --seconds ${SECONDS_PER_CELL:-3} 2>&1 | tee "$OUT/table.md"
$PY -m infolens.bench --device cuda --paper --cuda-graph --batch-size 1024 2>&1 | tee "$OUT/paper.txt"
$PY -m infolens.bench --device cuda --paper --batch-size 256 2>&1 | tee -a "$OUT/paper.txt"
$PY -m infolens.bench --agreement examples/coffee.png examples/chelsea.png \
    --configs cpu,cuda,cuda+graph,cuda+fp16,cuda+fp16+graph,cuda+trt 2>&1 | tee "$OUT/agreement.md"
