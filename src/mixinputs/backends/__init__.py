"""Generation backends behind one interface, so the demo, eval and bench never import an engine.

A backend turns prompts into completions under :class:`SamplingSettings`; ``settings.moi`` says
whether (and how) to mix inputs. ``load_backend("vllm" | "hf", model)`` imports the engine lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

from mixinputs.config import MoIConfig

BACKENDS = ("vllm", "hf")


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


def load_backend(name: str, model: str | None = None, **options) -> Backend:
    """``"vllm"`` or ``"hf"`` on ``model`` (default: the embedded SmolLM2-135M-Instruct)."""
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
