"""Patch: the V1 model runner feeds each MoI request's mixture instead of its sampled token.

Why: vLLM has no hook that changes a step's input embeddings from the previous step's
    distribution and sampled token, which is what MoI needs.
How: wrap five methods of ``GPUModelRunner`` (the CPU runner inherits four and overrides
    ``load_model``, which is wrapped on both), each handing V1's data to ``V1MoI`` /
    ``MoIStepState``:
    - ``load_model``: swap the token embedding for ``MixedInputEmbedding`` (persistent buffers,
      allocated before vLLM profiles memory and captures graphs) and attach the state;
    - ``_update_states``: read new requests' settings, forget finished ones;
    - ``_prepare_inputs``: map this step's tokens to mixture rows (host only);
    - ``_sample``: compute the mixtures of the sampled tokens on the device;
    - ``_dummy_run`` (profiling, graph capture, idle data-parallel ranks): no mixture is fed;
    - ``_dummy_sampler_run`` (memory profiling): MoI's worst step runs with the dummy sampler
      call (``worst_case.py``), so the KV cache leaves room for it.
    Signatures are the same in vLLM 0.26 to 0.33 (checked against each release's source);
    vLLM 0.34 deleted this runner, and the patch is installed only where it exists.
Upstream: an input-embedding hook in the runner would remove this patch; Model Runner V2's
    ``ModelState.prepare_inputs_embeds`` is close to one.
"""

from __future__ import annotations

from typing import Any

import torch

from mixinputs.vllm_plugin.attach import attach, failed
from mixinputs.vllm_plugin.patches import wrap_method
from mixinputs.vllm_plugin.settings import PluginSettings
from mixinputs.vllm_plugin.v1_state import V1MoI


def install(runner: Any, settings: PluginSettings) -> None:
    """Attach MoI to a runner whose model was just loaded (``attach`` keeps failures to MoI)."""
    if getattr(runner, "_mixinputs", None) is not None:
        return
    runner._mixinputs = None
    try:
        model, sizes = runner.get_model(), (runner.max_num_reqs, runner.max_num_tokens)
    except Exception as e:  # a runner without V1's attributes: not one MoI knows
        failed(f"reading {type(runner).__name__}'s model and sizes", e, settings)
        return
    state = attach(
        model,
        runner.vllm_config,
        *sizes,
        settings,
        "the V1 model runner",
        replay_buffer=lambda embedding: _unused_inputs_embeds(runner, embedding.weight),
    )
    runner._mixinputs = None if state is None else V1MoI(runner, state)
    if state is not None:
        state.contained(
            "hooking the sampler's distribution", _record_sampler_distribution, runner, state
        )


def _unused_inputs_embeds(runner: Any, weight: torch.Tensor) -> torch.Tensor | None:
    """vLLM's ``inputs_embeds`` device buffer [max_num_batched_tokens, D] when this runner never
    uses it (a text-only model without prompt embeddings): replayed mixtures then cost nothing."""
    if getattr(runner, "supports_mm_inputs", True) or getattr(runner, "enable_prompt_embeds", True):
        return None
    buffer = getattr(getattr(runner, "inputs_embeds", None), "gpu", None)
    fits = (
        isinstance(buffer, torch.Tensor)
        and buffer.dim() == 2
        and buffer.shape[0] >= runner.max_num_tokens
        and buffer.shape[1] == weight.shape[1]
        and buffer.dtype == weight.dtype
        and buffer.device == weight.device
    )
    return buffer if fits else None


def _record_sampler_distribution(runner: Any, state) -> None:
    """The sampling prior needs the logits the top-k/top-p stage samples from."""
    stage = getattr(getattr(runner, "sampler", None), "topk_topp_sampler", None)
    if stage is None:
        return
    original = stage.forward

    def forward(logits, *args, **kwargs):
        state.record_processed(logits)
        return original(logits, *args, **kwargs)

    stage.forward = forward


def apply(settings: PluginSettings) -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    owners = [GPUModelRunner]
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner

        owners.append(CPUModelRunner)
    except ImportError:  # a build without the CPU runner
        pass

    def make_load_model(original):
        def load_model(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            install(self, settings)
            return result

        return load_model

    for owner in owners:
        if "load_model" in owner.__dict__:
            wrap_method(owner, "load_model", make_load_model)

    def make_update_states(original):
        def _update_states(self, scheduler_output, *args, **kwargs):
            result = original(self, scheduler_output, *args, **kwargs)
            moi = getattr(self, "_mixinputs", None)
            if moi is not None:
                moi.on_update_states(scheduler_output)
            return result

        return _update_states

    def make_prepare_inputs(original):
        def _prepare_inputs(self, scheduler_output, num_scheduled_tokens, *args, **kwargs):
            result = original(self, scheduler_output, num_scheduled_tokens, *args, **kwargs)
            moi = getattr(self, "_mixinputs", None)
            if moi is not None:
                moi.plan(num_scheduled_tokens)
            return result

        return _prepare_inputs

    def make_sample(original):
        def _sample(self, logits, spec_decode_metadata, *args, **kwargs):
            moi = getattr(self, "_mixinputs", None)
            if moi is None or logits is None:
                return original(self, logits, spec_decode_metadata, *args, **kwargs)
            # V1's sampler edits float32 logits in place and converts other dtypes to a new
            # float32 tensor first: those logits stay as they were.
            return moi.state.sample(
                lambda lg: original(self, lg, spec_decode_metadata, *args, **kwargs),
                logits,
                logits_kept=logits.dtype != torch.float32,
            )

        return _sample

    def make_dummy_sampler_run(original):
        def _dummy_sampler_run(self, *args, **kwargs):
            moi = getattr(self, "_mixinputs", None)
            sampler = getattr(self, "sampler", None)
            if moi is None or sampler is None or moi.state.disabled is not None:
                return original(self, *args, **kwargs)
            self.sampler = _ProfilingSampler(sampler, moi.state)
            try:
                return original(self, *args, **kwargs)
            finally:
                self.sampler = sampler

        return _dummy_sampler_run

    def make_dummy_run(original):
        def _dummy_run(self, *args, **kwargs):
            moi = getattr(self, "_mixinputs", None)
            if moi is not None:  # a made-up batch: last step's positions mean nothing here
                moi.state.clear()
            return original(self, *args, **kwargs)

        return _dummy_run

    wrap_method(GPUModelRunner, "_update_states", make_update_states)
    wrap_method(GPUModelRunner, "_prepare_inputs", make_prepare_inputs)
    wrap_method(GPUModelRunner, "_sample", make_sample)
    wrap_method(GPUModelRunner, "_dummy_run", make_dummy_run)
    wrap_method(GPUModelRunner, "_dummy_sampler_run", make_dummy_sampler_run)


class _ProfilingSampler:
    """V1's sampler during ``_dummy_sampler_run``: its first call runs MoI's worst steps
    (``worst_case.profile``); everything else is the sampler's."""

    def __init__(self, base: Any, state: Any):
        self._base = base
        self._state = state
        self._done = False

    def __call__(self, logits, sampling_metadata, *args, **kwargs):
        def run(lg):
            return self._base(lg, sampling_metadata, *args, **kwargs)

        if self._done:
            return run(logits)
        self._done = True
        from mixinputs.vllm_plugin.worst_case import profile

        return profile(self._state, run, logits)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)
