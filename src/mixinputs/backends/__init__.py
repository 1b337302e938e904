"""Generation backends behind one interface, so the demo, eval and bench never import an engine.

A backend turns prompts into completions under :class:`SamplingSettings`; ``settings.moi`` says
whether (and how) to mix inputs. ``generate_stream`` takes requests with different settings at
once and yields each completion as it finishes (the evaluation submits a whole run this way).
``load_backend("vllm" | "hf" | "openai", model)`` imports the engine or client lazily.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from mixinputs.config import MoIConfig

BACKENDS = ("vllm", "hf", "openai")


@dataclass(frozen=True)
class SamplingSettings:
    """What one generate call asks for. ``temperature=0`` is greedy; ``moi=None`` is standard.

    >>> SamplingSettings(max_tokens=8).with_moi(MoIConfig(beta=2.0)).moi.beta
    2.0
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    seed: int | None = None
    min_tokens: int = 0
    moi: MoIConfig | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def with_moi(self, moi: MoIConfig | None) -> SamplingSettings:
        return replace(self, moi=moi)


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int


class Backend(Protocol):
    name: str
    model: str

    def chat_prompt(self, user_message: str) -> str:
        """The model's chat template applied to one user message, ready for generation."""
        ...

    def generate(self, prompts: list[str], settings: SamplingSettings) -> list[Completion]:
        """One completion per prompt, in order."""
        ...

    def generate_stream(self, requests: list[Request]) -> Iterator[tuple[int, Completion]]:
        """Every request's completion as ``(index into requests, completion)``, in the order
        they finish; requests may differ in their settings (MoI or not, beta, seed)."""
        ...


Request = tuple[str, SamplingSettings]
"""A prompt and the settings to complete it under."""


def stream_by_settings(
    backend: Backend, requests: list[Request], batch_size: int = 64
) -> Iterator[tuple[int, Completion]]:
    """``generate_stream`` for a backend that batches one setting at a time: requests grouped by
    settings, ``batch_size`` prompts per ``generate`` call.

    >>> class Echo:
    ...     def generate(self, prompts, settings):
    ...         return [Completion(p * settings.max_tokens, 1) for p in prompts]
    >>> reqs = [("a", SamplingSettings(max_tokens=1)), ("b", SamplingSettings(max_tokens=2)),
    ...         ("c", SamplingSettings(max_tokens=1))]
    >>> sorted((i, c.text) for i, c in stream_by_settings(Echo(), reqs))
    [(0, 'a'), (1, 'bb'), (2, 'c')]
    """
    groups: dict[SamplingSettings, list[int]] = defaultdict(list)
    for index, (_, settings) in enumerate(requests):
        groups[settings].append(index)
    for settings, indices in groups.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            completions = backend.generate([requests[i][0] for i in chunk], settings)
            yield from zip(chunk, completions, strict=True)


def load_backend(name: str, model: str | None = None, **options) -> Backend:
    """``"vllm"`` or ``"hf"`` on ``model`` (default: the embedded SmolLM2-135M-Instruct), or
    ``"openai"``: a running mixinputs-enabled vLLM server (``base_url=...``; ``model`` defaults
    to the one it serves)."""
    if name == "openai":
        from mixinputs.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(model=model, **options)
    if model is None:
        from mixinputs.embedded_model import embedded_model_path

        model = str(embedded_model_path())
    if name == "hf":
        from mixinputs.backends.hf_backend import HFBackend

        return HFBackend(model, **options)
    if name == "vllm":
        from mixinputs.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model, **options)
    raise ValueError(f"unknown backend {name!r}: choose one of {BACKENDS}")
