"""An engine with one of the plugin's parts made to raise, for tests/engine/test_vllm_faults.py.

The fault is injected at the top level, so that it is in every process of the engine: vLLM
spawns the engine core and the workers, and each re-imports this file before loading plugins.
``MIXINPUTS_TEST_FAULT``: ``register`` (a patch cannot be installed), ``attach`` (the model's
layout is unknown), ``step`` (the first MoI step raises). ``MIXINPUTS_TEST_ASYNC=1`` drives an
``AsyncLLM`` (the server's engine) instead of ``LLM``. Reads JSON on stdin ({"model", "engine",
"prompts", "moi", "standard"}); prints one line "FAULT-RESULT:<json>".
"""

import asyncio
import json
import os
import sys

FAULT = os.environ.get("MIXINPUTS_TEST_FAULT", "")


def _raise(message):
    def fail(*_args, **_kwargs):
        raise RuntimeError(message)

    return fail


if FAULT == "register":
    from mixinputs.vllm_plugin.patches import prefix_cache

    prefix_cache.apply = _raise("injected: the prefix-cache hook moved")
elif FAULT == "attach":
    from mixinputs.vllm_plugin import attach

    attach.find_input_embedding = _raise("injected: unknown model layout")
elif FAULT == "step":
    from mixinputs.vllm_plugin import status
    from mixinputs.vllm_plugin.mix_step import MixStep

    MixStep.mix_into_slots = _raise("injected: the step failed")
    status.REFRESH_S = 0.0  # the front end asks the workers again at the next MoI request


def _greedy(extra=None, n=12):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, extra_args=extra)


def _standard(spec):
    """The standard requests: the no-plugin reference's own (tests/conftest.py)."""
    from vllm import SamplingParams

    requests = spec["standard"]
    return [r["prompt"] for r in requests], [SamplingParams(**r["params"]) for r in requests]


def run_sync(spec, result):
    from vllm import LLM

    llm = LLM(model=spec["model"], **spec["engine"])
    prompts, moi = spec["prompts"], spec["moi"]

    def ids(outputs):
        return [list(o.outputs[0].token_ids) for o in outputs]

    result["standard"] = ids(llm.generate(*_standard(spec), use_tqdm=False))
    if FAULT == "step":  # in flight when the step fails: it goes on, decoded as a standard one
        result["first_moi"] = ids(llm.generate(prompts[:1], [_greedy(moi)], use_tqdm=False))
        again = llm.generate(*_standard(spec), use_tqdm=False)
        result["standard_after"] = ids(again)
    try:
        llm.generate(prompts[:1], [_greedy(moi)], use_tqdm=False)
        result["moi_error"] = None
    except ValueError as e:
        result["moi_error"] = str(e)


async def run_async(spec, result):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=spec["model"], **spec["engine"]))
    prompts, moi = spec["prompts"], spec["moi"]

    async def final(prompt, params, request_id):
        last = None
        async for out in engine.generate(prompt, params, request_id):
            last = out
        return list(last.outputs[0].token_ids)

    try:  # right after the start: the workers' first answer may still be on its way
        await final(prompts[0], _greedy(moi), "moi-early")
        result["early_moi_error"] = None
    except ValueError as e:
        result["early_moi_error"] = str(e)
    prompts_std, params_std = _standard(spec)
    standard = [
        final(p, q, f"std-{i}")
        for i, (p, q) in enumerate(zip(prompts_std, params_std, strict=True))
    ]
    result["standard"] = list(await asyncio.gather(*standard))  # one batch, as the reference
    try:  # now the answer is in: refused when called, before any stream exists
        engine.generate(prompts[0], _greedy(moi), "moi-late")
        result["late_moi_error"] = None
    except ValueError as e:
        result["late_moi_error"] = str(e)
    engine.shutdown()


def main():
    spec = json.loads(sys.stdin.read())
    result = {}
    try:
        if os.environ.get("MIXINPUTS_TEST_ASYNC") == "1":
            asyncio.run(run_async(spec, result))
        else:
            run_sync(spec, result)
    except Exception as e:  # the engine did not start (MIXINPUTS_BETA)
        result["start_error"] = f"{type(e).__name__}: {e}"
    print("FAULT-RESULT:" + json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
