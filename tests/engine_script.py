"""Runs one batch on a vLLM engine in its own process; used by the tests (reads JSON on stdin).

Input: {"model", "engine": {LLM kwargs}, "requests": [{"prompt", "params": {SamplingParams}}]}.
Prints one line "ENGINE-RESULT:<json>": [{"text", "token_ids"}] in request order, and one line
"ENGINE-INFO:<json>" about the MoI worker ({"moi": bool, "fused": bool}).
"""

import json
import sys

MARKER = "ENGINE-RESULT:"
INFO = "ENGINE-INFO:"


def _worker_info(worker) -> dict:
    from mixinputs.vllm_plugin.attach import step_state_of

    state = step_state_of(worker.model_runner)
    return {"moi": state is not None, "fused": state is not None and state.step.fused}


def main() -> None:
    spec = json.loads(sys.stdin.read())
    from vllm import LLM, SamplingParams

    llm = LLM(model=spec["model"], **spec["engine"])
    prompts = [r["prompt"] for r in spec["requests"]]
    params = [SamplingParams(**r.get("params", {})) for r in spec["requests"]]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    result = [
        {"text": o.outputs[0].text, "token_ids": list(o.outputs[0].token_ids)} for o in outputs
    ]
    print(MARKER + json.dumps(result))
    try:
        info = llm.collective_rpc(_worker_info)[0]
    except Exception as e:  # no plugin, or callables not allowed over RPC
        info = {"error": repr(e)}
    print(INFO + json.dumps(info))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
