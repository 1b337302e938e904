"""SwiReasoning, SeLaR and Multiplex in ``mixinputs.hf`` on the embedded model (float32),
replayed against the authors' own step rules (``tests/faithfulness.py``), token for token."""

from __future__ import annotations

import pytest
import torch

from mixinputs.config import MoIConfig
from tests import faithfulness

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow
PROMPTS = ["The capital of France is", "1, 2, 3, 4,"]  # SwiReasoning switches on both
# The authors' sampling recipe (SwiReasoning's and SeLaR's run.py); Multiplex's: T 1, no cut.
RECIPE = {"temperature": 0.6, "top_k": 20, "top_p": 0.95}
MULTIPLEX_RECIPE = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}


@pytest.fixture(scope="module")
def smol():
    from mixinputs.embedded_model import embedded_model_path

    path = str(embedded_model_path())
    tok = transformers.AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return tok, model


def configs(tok) -> dict[str, MoIConfig]:
    """SmolLM2 has no <think> / </think>: its chat markers stand in, and a short window and a cap
    of 1 make every branch of SwiReasoning run within a few dozen tokens."""
    return {
        "swir": MoIConfig(
            mode="swir",
            think_end=tok.convert_tokens_to_ids("<|im_end|>"),
            think_start=tok.convert_tokens_to_ids("<|im_start|>"),
            swir_linebreak=tok.encode("\n", add_special_tokens=False)[0],
            swir_window=3,
            swir_max_switches=1,
            swir_convergence=(tok.convert_tokens_to_ids("<|im_end|>"),),
            swir_termination=" The final answer is",
            swir_answer_tokens=8,
            swir_ramp_tokens=64,
        ),
        "selar": MoIConfig(mode="selar", selar_threshold=0.5),
        "multiplex": MoIConfig(mode="multiplex", think_end=tok.encode(".")[0]),
    }


@pytest.mark.parametrize("mode", ["swir", "selar", "multiplex"])
def test_hf_feeds_what_the_authors_rule_feeds(smol, mode):
    from mixinputs.hf import enable_moi

    tok, model = smol
    recipe = MULTIPLEX_RECIPE if mode == "multiplex" else RECIPE
    inputs = tok(PROMPTS, return_tensors="pt", padding=True)
    records = []
    torch.manual_seed(0)
    with enable_moi(model, config=configs(tok)[mode], tokenizer=tok, seed=5) as handle:
        handle.observers.append(records.append)
        out = model.generate(
            **inputs, max_new_tokens=32, do_sample=True, pad_token_id=tok.eos_token_id, **recipe
        )
        config = handle.config
    generated = out[:, inputs["input_ids"].shape[1] :]
    table = model.get_input_embeddings().weight.detach()
    totals: dict[str, int] = {}
    for b in range(len(PROMPTS)):
        steps = [
            faithfulness.Step(
                int(r.rows.position[b]), r.prior[b], int(r.sampled[b]), int(r.emitted[b]),
                r.mixed[b],
            )
            for r in records
        ]  # fmt: skip
        assert [s.emitted for s in steps] == generated[b, : len(steps)].tolist()
        counts = faithfulness.check(
            steps, config, table, seed=5 + b, top_k=0, top_p=1.0
        )  # the recorded logits are the sampler's, already cut
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    assert totals["latent"] > 0, totals  # the method did something
    if mode != "selar":
        assert totals["switches"] > 0, totals
