#!/usr/bin/env bash
# The vLLM test modules on the GPU, with CUDA graphs and async scheduling on (run THERE, after
# `python3 benchmarks/gpu/kit.py receive` printed "kit READY").
#
#   bash benchmarks/gpu/run_tests.sh RUNNER MODE [pytest args...]
#     RUNNER: v1 (VLLM_USE_V2_MODEL_RUNNER=0) or v2 (=1)
#     MODE:   FULL or PIECEWISE (CompilationConfig.cudagraph_mode), or FULL_AND_PIECEWISE
#   default modules: smoke, engine (exactness, isolation, prefix caching, chunked prefill),
#   preemption, server, compiled. Name others after MODE to run those instead.
#
# The tests read their engine arguments from MIXINPUTS_TEST_ENGINE (JSON, merged over
# tests/vllm_support.py's ENGINE_DEFAULTS) and the server's extra flags from
# MIXINPUTS_TEST_SERVER_ARGS. Writes $OUT/tests-RUNNER-MODE.log and a junit XML when $OUT is set.
set -uo pipefail
cd "$(dirname "$0")/../.."
runner=${1:?RUNNER: v1 or v2}
mode=${2:?MODE: FULL, PIECEWISE or FULL_AND_PIECEWISE}
shift 2
kit=${MIXINPUTS_KIT:-/tmp/kit}
[ -f "$kit/READY" ] || { echo "the kit is not installed: carry every piece and run kit.py receive"; exit 2; }
eval "$(python3 benchmarks/gpu/kit.py env)"

case $runner in
  v1) export VLLM_USE_V2_MODEL_RUNNER=0 ;;
  v2) export VLLM_USE_V2_MODEL_RUNNER=1 ;;
  *) echo "RUNNER must be v1 or v2"; exit 2 ;;
esac
# CUDA graphs on (enforce_eager false, the graph mode asked for), async scheduling on, the
# checkpoint's dtype (bf16). 0.15 of the GPU each: a test module's engine and its reference
# engine in a subprocess run side by side.
export MIXINPUTS_TEST_ENGINE="{\"enforce_eager\": false, \"async_scheduling\": true, \"dtype\": \"auto\", \"compilation_config\": {\"cudagraph_mode\": \"$mode\"}, \"gpu_memory_utilization\": 0.15}"
export MIXINPUTS_TEST_SERVER_ARGS="--no-enforce-eager --async-scheduling --dtype auto --compilation-config {\"cudagraph_mode\":\"$mode\"}"

modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
  modules=(tests/test_vllm_smoke.py tests/test_vllm_engine.py tests/test_vllm_preemption.py
           tests/test_vllm_server.py tests/test_vllm_compiled.py)
fi
out=${OUT:-/tmp/kit/out}
mkdir -p "$out"
log="$out/tests-$runner-$mode.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$log"
echo "runner $runner, cudagraph_mode $mode, vLLM $(cat "$kit/READY"), modules: ${modules[*]}" | tee -a "$log"
start=$(date +%s)
# -s: the engines' own logs (graph capture, runner, async scheduling) go into the log.
python3 -m pytest -p no:cacheprovider -s -rfEs --timeout 900 -o addopts="" \
  --junitxml="$out/junit-$runner-$mode.xml" "${modules[@]}" >>"$log" 2>&1
rc=$?
echo "== pytest exit $rc after $(( $(date +%s) - start )) s" | tee -a "$log"
echo "== evidence from the engines' logs (counts):"
for pattern in "Capturing CUDA graphs" "cudagraph_mode" "CUDAGraphMode.FULL" "CUDAGraphMode.PIECEWISE" \
               "async_scheduling=True" "Model Runner V2" "V2 model runner" "mixinputs: MoI ready" \
               "mixinputs: using vLLM's V1 model runner"; do
  printf '  %-45s %s\n' "$pattern" "$(grep -c -- "$pattern" "$log")"
done
grep -E "^(FAILED|ERROR)|[0-9]+ (passed|failed)" "$log" | tail -40
exit $rc
