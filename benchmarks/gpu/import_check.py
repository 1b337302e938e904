"""Rehearsal HERE, without a GPU: does the kit's vLLM import on the image's Python and torch?

    python3.12 -m venv /tmp/kv312    # then pip install torch==2.11.0 transformers==5.17.0 ...
    gcc -shared -fPIC -o /tmp/stubcuda/libcuda.so.1 -x c /dev/null     # no driver here
    LD_LIBRARY_PATH=/tmp/stubcuda PYTHONPATH=src:/tmp/kit/site /tmp/kv312/bin/python \\
        benchmarks/gpu/import_check.py

Loads vLLM's real ``_C_stable_libtorch.abi3.so`` (``RTLD_LAZY``: nothing calls the driver at
import), fakes an sm_90 CUDA platform so the CUDA-only imports run, imports the modules the GPU
run uses, and asks vLLM which attention backend and sampler it would pick. Exit 1 on any failure.
"""

from __future__ import annotations

import importlib
import os
import sys

MODULES = [
    "vllm",
    "vllm.entrypoints.llm",
    "vllm.v1.engine.core",
    "vllm.v1.engine.core_client",
    "vllm.v1.executor.multiproc_executor",
    "vllm.v1.worker.gpu_worker",
    "vllm.v1.worker.gpu_model_runner",
    "vllm.v1.worker.gpu.model_runner",
    "vllm.v1.worker.gpu.sample.sampler",
    "vllm.v1.sample.sampler",
    "vllm.v1.attention.backends.triton_attn",
    "vllm.v1.attention.backends.flash_attn",
    "vllm.model_executor.models.qwen2",
    "vllm.model_executor.models.llama",
    "vllm.model_executor.model_loader.dummy_loader",
    "vllm.compilation.backends",
    "vllm.compilation.piecewise_backend",
    "vllm.v1.structured_output",
    "vllm.entrypoints.openai.api_server",
    "vllm.device_allocator.cumem",
    "vllm.distributed.device_communicators.pynccl",
    "mixinputs.vllm_plugin",
    "mixinputs.vllm_plugin.v2_model_state",
    "mixinputs.fused_step",
    "mixinputs.bench",
]


def main() -> int:
    sys.setdlopenflags(os.RTLD_LAZY | os.RTLD_GLOBAL)
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")  # as kit.py env sets it
    import torch
    import vllm._C_stable_libtorch  # the real ops, against this torch
    import vllm.platforms
    from vllm.platforms.cuda import CudaPlatform
    from vllm.platforms.interface import DeviceCapability

    CudaPlatform.get_device_capability = classmethod(
        lambda cls, device_id=0: DeviceCapability(9, 0)
    )
    vllm.platforms._current_platform = CudaPlatform()
    failed = 0
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as e:  # report them all
            failed += 1
            print(f"FAIL {name}: {e!r}"[:400])
    print(f"{len(MODULES) - failed} of {len(MODULES)} modules import")
    for lib in ("_moe_C_stable_libtorch", "_flashmla_C", "_qutlass_C"):
        print(f"vllm.{lib}: {'imported' if f'vllm.{lib}' in sys.modules else 'not imported'}")

    from vllm.v1.attention.backends.registry import AttentionBackendEnum
    from vllm.v1.attention.selector import AttentionSelectorConfig
    from vllm.v1.sample.ops.topk_topp_sampler import flashinfer_sampler_supported

    for head, dtype in ((64, torch.float32), (128, torch.bfloat16)):  # SmolLM2, Qwen2.5
        config = AttentionSelectorConfig(head, dtype, "auto", 16)
        for asked in (AttentionBackendEnum.TRITON_ATTN, None):
            got = CudaPlatform.get_attn_backend_cls(asked, config)
            print(f"head {head} {dtype}, asked {asked and asked.name}: {got}")
            failed += "triton_attn" not in got
    print("FlashInfer sampler:", flashinfer_sampler_supported())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
