#!/usr/bin/env bash
# `mixinputs bench` on the GPU: MoI / vanilla vLLM / plugin-loaded standard, one model shape,
# dummy weights from a shipped config, token-id prompts (run THERE, after "kit READY").
#
#   bash benchmarks/gpu/run_bench.sh RUNNER SHAPE LENGTHS BATCHES [ROUNDS] [VANILLA]
#     RUNNER:  v2 (VLLM_USE_V2_MODEL_RUNNER=1, vLLM's default on GPUs) or v1 (=0), both engines
#     SHAPE:   qwen2.5-7b or qwq-32b (benchmarks/gpu/configs/SHAPE/config.json)
#     LENGTHS: output lengths, e.g. 128 or 128,2048;  BATCHES: e.g. 1,8,64,256
#     ROUNDS:  rounds per arm after one warm-up round (default 3)
#     VANILLA: interleaved (default: both engines up, 0.45 of the GPU each) or sequential
#              (one engine at a time, 0.9 of the GPU: the 32B shape, or 2048 tokens at batch 256)
# Writes $OUT/bench-RUNNER-SHAPE-LENGTHS.json (the JSON docs/benchmarks.md's GPU table is made
# from) and prints the summary lines.
set -uo pipefail
cd "$(dirname "$0")/../.."
runner=${1:?RUNNER: v2 or v1}
shape=${2:?SHAPE: qwen2.5-7b or qwq-32b}
lengths=${3:?LENGTHS, e.g. 128,2048}
batches=${4:?BATCHES, e.g. 1,8,64,256}
rounds=${5:-3}
vanilla=${6:-interleaved}
kit=${MIXINPUTS_KIT:-/tmp/kit}
[ -f "$kit/READY" ] || { echo "the kit is not installed: carry every piece and run kit.py receive"; exit 2; }
eval "$(python3 benchmarks/gpu/kit.py env)"
case $runner in
  v1) export VLLM_USE_V2_MODEL_RUNNER=0 ;;
  v2) export VLLM_USE_V2_MODEL_RUNNER=1 ;;
  *) echo "RUNNER must be v1 or v2"; exit 2 ;;
esac
out=${OUT:-/tmp/kit/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# CUDA graphs (vLLM's default FULL_AND_PIECEWISE) and async scheduling on.
python3 -m mixinputs bench --backend vllm --model "benchmarks/gpu/configs/$shape" \
  --batch-sizes "$batches" --max-tokens "$lengths" --rounds "$rounds" --vanilla "$vanilla" \
  --engine-args '{"enforce_eager": false, "async_scheduling": true}' \
  --json "$out/bench-$runner-$shape-${lengths//,/-}.json"
