#!/usr/bin/env bash
# The GPU verification run (benchmarks/gpu/README.md): the checks in priority order, each under
# its own time cap inside one deadline, so that a slow stage cannot eat the rest. Writes
# $OUT/verify.json (what ran, passed, failed, timings, versions, the GPU), $OUT/verify.log and
# one log per stage, plus the benches' JSON: 8 files at most, what a call brings back.
#
#   bash benchmarks/gpu/verify.sh [--stages 1,2,3,4] [--budget SECONDS]
#   1  tests/core/test_gpu.py (fused step = reference, batch-invariant, CUDA graph capture, no host
#      sync, the worst-case profile against CUDA's allocator); benchmarks/mixing_step.py at
#      M = 1, 64, 256 on the Qwen2.5-7B and QwQ-32B shapes
#   2  the engine tests on the runner vLLM picks (Model Runner V2 on CUDA), CUDA graphs (vLLM's
#      default mode) and async scheduling
#   3  mixinputs bench, Qwen2.5-7B shape: batch 64 and 256, 256 tokens, 3 rounds interleaved
#   4  what time is left: preemption, every method and the fault injection on the same runner,
#      then the QwQ-32B shape at batch 64
#
# No runner variable is set anywhere: MoI runs on the runner vLLM picks, as for a user.
#
# VERIFY_DRY_RUN=1 runs the same commands on a CPU machine: the project's .venv (CPU vLLM) for
# Python, the kit unpacked in $MIXINPUTS_KIT for the model files, a tiny config for the bench,
# the engine arguments a CPU takes, and every cap times VERIFY_CAP_SCALE (default 10).
set -uo pipefail
cd "$(dirname "$0")/../.."
stages=1,2,3,4
budget=540 # a call's 600 s, less the kit's unpacking and the transfers
while [ $# -gt 0 ]; do
  case $1 in
    --stages) stages=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    *) echo "verify.sh: unknown argument $1"; exit 2 ;;
  esac
done
dry=${VERIFY_DRY_RUN:-0}
out=${OUT:-/tmp/verify-out}
work=$(mktemp -d /tmp/verify.XXXXXX) # junit XMLs, pytest's temp dirs, the stage table
mkdir -p "$out"
kit=${MIXINPUTS_KIT:-/tmp/kit}
export MIXINPUTS_KIT=$kit VERIFY_WORK=$work PYTHONUNBUFFERED=1

# Test engines: a random-weight copy of the embedded SmolLM2-135M (random_model.py, made here
# from the kit's config and tokenizer, seed 0), in float32 (the tests' exactness bounds are
# float32's, as on CPU), CUDA graphs and async scheduling on, Triton attention (the kit has no
# FlashAttention build), 0.2 of the GPU each (a module's engine and a reference engine side by
# side pass vLLM's free-memory check). The bench: vLLM's dummy weights on the public configs,
# bf16, vLLM's graph mode, capturing only the batch sizes it runs and the powers of two below.
if [ "$dry" = 1 ]; then
  scale=${VERIFY_CAP_SCALE:-10}
  PY=${VERIFY_PYTHON:-.venv/bin/python}
  export MIXINPUTS_TEST_MODEL=$kit/random-smollm2 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
  engine='{}'
  bench_engine='{}'
  shape_7b=benchmarks/gpu/configs/tiny-qwen2 shape_32b=benchmarks/gpu/configs/tiny-qwen2
  # One engine at a time on the shared CPU machine: the vanilla engine's rounds run first.
  bench_7b=(--batch-sizes 2,4 --max-tokens 8 --dtype float32 --vanilla sequential)
  bench_32b=(--batch-sizes 2 --max-tokens 8 --dtype float32)
  mixing=(--device cpu --batches 1,4 --shapes 4096x128 --repeats 2)
  # vLLM picks V1 on this CPU (no Triton CPU backend); test_vllm_v2.py stands one in (Triton's
  # interpreter, in its own engine processes) and asks for V2 itself.
  export PYTHONPATH=$PWD # the tests' engine processes import tests.*
else
  scale=1
  PY=python3
  eval "$(python3 benchmarks/gpu/kit.py env)"
  if [ ! -f "$kit/READY" ] && [ "$stages" != 1 ]; then
    # A piece is missing (a cold machine lost the first call's): stage 1 needs only the image.
    echo "verify: the kit is not READY ($(python3 benchmarks/gpu/kit.py status)): stage 1 only"
    stages=1
  fi
  engine='{"dtype": "float32", "enforce_eager": false, "async_scheduling": true, "attention_backend": "TRITON_ATTN", "gpu_memory_utilization": 0.2}'
  bench_engine='{"enforce_eager": false, "async_scheduling": true, "attention_backend": "TRITON_ATTN", "compilation_config": {"cudagraph_capture_sizes": [1, 2, 4, 8, 16, 32, 64, 128, 256]}}'
  shape_7b=benchmarks/gpu/configs/qwen2.5-7b shape_32b=benchmarks/gpu/configs/qwq-32b
  bench_7b=(--batch-sizes 64,256 --max-tokens 256 --dtype bfloat16 --vanilla interleaved)
  bench_32b=(--batch-sizes 64 --max-tokens 256 --dtype bfloat16)
  mixing=(--device cuda --batches 1,64,256 --shapes 152064x3584,152064x5120 --peak-tbps 4.8)
fi
export MIXINPUTS_TEST_ENGINE=$engine
# Stage 2 and 4 tests. Left out of test_vllm_engine.py: the Triton-interpreter engine (a CPU
# device), and the no-plugin / environment comparisons that test_vllm_v2.py makes with one
# reference engine for the module (each costs an engine start).
skip=(test_fused_triton_step_drives_the_engine_like_the_reference test_standard_requests_equal_vllm_without_the_plugin
      test_mixed_batch_isolation test_environment_default_matches_per_request)
deselect=()
for t in "${skip[@]}"; do deselect+=(--deselect "tests/engine/test_vllm_engine.py::$t"); done
pytest_args=(-p no:cacheprovider -o addopts= -rfEs -s)

# run_stage ID NAME CAP MIN RESERVE LOG COMMAND...: runs COMMAND in its own process group (timeout
# kills the engines it started too) for at most CAP seconds and never into the last RESERVE
# seconds, which later required stages keep; skipped when less than MIN would be left.
run_stage() {
  local id=$1 name=$2 cap=$(($3 * scale)) min=$(($4 * scale)) reserve=$(($5 * scale)) log=$out/$6
  shift 6
  local left=$((deadline - $(date +%s) - reserve - 5 * scale))
  if [ $left -lt "$min" ]; then
    echo "== stage $id $name: skipped, ${left}s left"
    printf '%s\t%s\t%s\tskipped\t0\t0\t%s\n' "$id" "$name" "$cap" "$log" >>"$work/stages.tsv"
    return
  fi
  [ $left -lt $cap ] && cap=$left
  echo "== stage $id $name: cap ${cap}s: $*"
  echo "== stage $id $name: $*" >>"$log"
  local start rc
  start=$(date +%s)
  timeout -k 15 "$cap" "$@" >>"$log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$name" "$cap" "$rc" "$start" "$(date +%s)" "$log" >>"$work/stages.tsv"
  echo "== stage $id $name: exit $rc after $(($(date +%s) - start)) s"
  grep -E "^(FAILED|ERROR) |^=+ .*(passed|failed|error|skipped).* =+$|tok/s|MoI/vanilla" "$log" | tail -15
  [ "$dry" = 1 ] || for pid in $(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null); do
    kill -9 "$pid" 2>/dev/null # an engine the timeout left behind keeps its GPU memory
  done
}
wants() { [[ ",$stages," == *",$1,"* ]]; }

main() {
  deadline=$(($(date +%s) + budget * scale))
  echo "verify: stages $stages, budget $((budget * scale)) s, dry run $dry, $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$work/gpu.txt" 2>/dev/null
  "$PY" -c "import torch, triton, transformers as t; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', t.__version__)" >"$work/versions.txt" 2>&1
  cat "$work/gpu.txt" "$work/versions.txt"

  if wants 1; then
    run_stage 1 gpu-tests 120 40 300 stage1.log \
      "$PY" -m pytest "${pytest_args[@]}" --junitxml="$work/junit-1.xml" tests/core/test_gpu.py
    run_stage 1 mixing-step 60 20 300 stage1.log \
      "$PY" benchmarks/mixing_step.py "${mixing[@]}" --json "$work/mixing-step.json"
  fi
  if wants 2 || wants 3 || wants 4; then
    "$PY" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" \
      >"$work/vllm.txt" 2>&1 || echo "verify: vLLM does not import (is the kit READY?)"
    tail -3 "$work/vllm.txt"
  fi
  if wants 2 || wants 4; then
    run_stage 0 random-model 60 20 240 stage2.log \
      "$PY" benchmarks/gpu/random_model.py "$kit/model/smollm2-135m" "$MIXINPUTS_TEST_MODEL"
  fi
  if wants 2; then
    run_stage 2 engine 240 90 150 stage2.log \
      "$PY" -m pytest "${pytest_args[@]}" --junitxml="$work/junit-2.xml" --basetemp="$work/tmp-2" \
      tests/engine/test_vllm_v2.py tests/engine/test_vllm_engine.py "${deselect[@]}"
  fi
  if wants 3; then
    run_stage 3 bench-7b 210 120 0 stage3.log \
      "$PY" -m mixinputs bench --backend vllm --model "$shape_7b" "${bench_7b[@]}" --rounds 3 \
      --engine-args "$bench_engine" --json "$out/bench-7b.json"
  fi
  if wants 4; then
    run_stage 4 more-engine 150 60 0 stage4.log \
      "$PY" -m pytest "${pytest_args[@]}" --junitxml="$work/junit-4.xml" --basetemp="$work/tmp-4" \
      tests/engine/test_vllm_preemption.py tests/engine/test_vllm_methods.py tests/engine/test_vllm_faults.py
    run_stage 4 bench-32b 240 150 0 stage4.log \
      "$PY" -m mixinputs bench --backend vllm --model "$shape_32b" "${bench_32b[@]}" --rounds 3 \
      --vanilla sequential --engine-args "$bench_engine" --json "$out/bench-32b.json"
  fi

  # The V2 engines of test_vllm_v2.py log into pytest's temp dirs: their logs go to stage2.log.
  for f in "$work"/tmp-2/*/*.log; do
    [ -L "$(dirname "$f")" ] && continue # pytest's "...current" link to the same folder
    [ -f "$f" ] && { echo "== engine log $f"; cat "$f"; } >>"$out/stage2.log"
  done
  "$PY" benchmarks/gpu/verify_report.py "$work" "$out" --stages "$stages" --dry-run "$dry"
}
main 2>&1 | tee -a "$out/verify.log"; exit "${PIPESTATUS[0]}" # one line: bash reads no further
