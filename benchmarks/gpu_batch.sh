#!/usr/bin/env bash
# On the GPU machine, one device call per part (each fits the 10-minute limit): install, then run, writing the tables
# and JSON under $OUT (the device tool brings that folder back) or ./gpu-results.
#   bash benchmarks/gpu_batch.sh peers     # benchmarks/peers.py: this package vs stock CLIPModel vs open_clip
#   bash benchmarks/gpu_batch.sh trainer   # benchmarks/train_throughput.py, without and with gradient checkpointing
#   bash benchmarks/gpu_batch.sh quant     # benchmarks/quantization.py --device cuda: bitsandbytes 8-bit / 4-bit on a
#                                          # Llama-3-8B-shaped tower (and MiniLM when its wheel or --minilm is there)
#   bash benchmarks/gpu_batch.sh search    # benchmarks/search_indexing.py on CUDA: B/16 then L/14-336 indexing
#                                          # throughput (decode / preprocess / model split), 200 s budget each
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
part="${1:?usage: gpu_batch.sh peers|trainer|quant|search}"
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then  # carried from benchmarks/fetch_device_wheels.sh
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"; } | tee "$OUT/device.txt"
case "$part" in
  peers) python3 benchmarks/peers.py --json "$OUT/peers.json" | tee "$OUT/peers.md" ;;
  trainer)
    python3 benchmarks/train_throughput.py | tee "$OUT/train_throughput.md"
    python3 benchmarks/train_throughput.py --gradient-checkpointing | tee -a "$OUT/train_throughput.md" ;;
  quant)  # the JSON is rewritten after every path; nothing new starts after 480 s
    python3 benchmarks/quantization.py --device cuda --budget-s 480 --json "$OUT/quantization.json" \
      | tee "$OUT/quantization.md" ;;
  search)  # 12 MP JPEGs decoded by 16 workers: is the H200 fed, or is decoding the limit?
    for shape in b16 l14-336; do
      python3 benchmarks/search_indexing.py --shape "$shape" --device cuda --images 4096 --num-workers 16 \
        --batch-size 256 --budget 200 --json "$OUT/search_indexing_$shape.json" | tee -a "$OUT/search_indexing.md"
    done ;;
  *) echo "unknown part: $part (peers, trainer, quant or search)" >&2; exit 2 ;;
esac
