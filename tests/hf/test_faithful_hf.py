"""SwiReasoning, SeLaR and Multiplex in ``mixinputs.hf`` on the embedded model (float32),
replayed against the authors' own step rules (``tests/faithfulness.py``), token for token."""

from __future__ import annotations

from dataclasses import replace

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


# -- Soft Thinking as released (issue 24) ------------------------------------------------------
# Soft Thinking's released sampling (scripts/st/qwq32b_st_math.sh: T 0.6, top-k 30, top-p 0.95;
# its min-p 0.001 is left out: transformers applies it after top-p as the release does, vLLM
# before, see docs/soft-input-methods.md).
SOFT_RECIPE = {"temperature": 0.6, "top_k": 30, "top_p": 0.95}
NEVER = 49151  # SmolLM2's last id: a think-end token these prompts never reach
TOKENS = 16
# τ above any entropy: </think> (id 100) forced at the 4th token, the request ended 4 later.
FORCED = {"think_end": 100, "cold_stop_entropy": 100.0, "cold_stop_steps": 4}
SOFT = {
    "soft": MoIConfig(mode="soft"),  # crosses the think-end token its top-1 trace reaches
    "cold stop": MoIConfig(mode="soft", cold_stop_entropy=1.0, cold_stop_steps=2),
    "soft, cold stop forced": MoIConfig(mode="soft", **FORCED),
    "soft+gumbel, cold stop forced": MoIConfig(mode="soft", noise="gumbel", **FORCED),
    "soft+dirichlet, cold stop forced": MoIConfig(mode="soft", noise="dirichlet", **FORCED),
}


def run_soft(smol, config, greedy, manual_seed=0):
    """One generate call of ``config`` on both prompts (noise seed 5 + row): the records, the
    tokens and the resolved config."""
    from mixinputs.hf import enable_moi

    tok, model = smol
    inputs = tok(PROMPTS, return_tensors="pt", padding=True)
    recipe = {"do_sample": False} if greedy else {"do_sample": True, **SOFT_RECIPE}
    records = []
    torch.manual_seed(manual_seed)
    with enable_moi(model, config=config, tokenizer=tok, seed=5) as handle:
        handle.observers.append(records.append)
        out = model.generate(
            **inputs, max_new_tokens=TOKENS, pad_token_id=tok.eos_token_id, **recipe
        )
        resolved = handle.config
    return records, out[:, inputs["input_ids"].shape[1] :], resolved


@pytest.fixture(scope="module")
def top1_trace(smol):
    """The seeded "soft" run with a think-end token never reached: its thinking trace."""
    return run_soft(smol, MoIConfig(mode="soft", think_end=NEVER), greedy=False)


def with_think_end(config, trace) -> MoIConfig:
    """A config left at the default think-end text gets a token the first row's top-1 trace
    reaches (its first new token from the 4th on): the run crosses it."""
    if config.think_end != "</think>":
        return config
    row = trace[1][0].tolist()
    return replace(
        config, think_end=next(t for j, t in enumerate(row) if j >= 3 and t not in row[:j])
    )


@pytest.mark.parametrize(
    ("name", "greedy"),
    [(name, False) for name in SOFT] + [("soft, cold stop forced", True), ("cold stop", True)],
)
def test_hf_soft_thinking_follows_its_release(smol, top1_trace, name, greedy):
    """Soft Thinking (Randomized Soft Thinking with noise) in ``mixinputs.hf`` against the
    transcription of its sampler step and ``update_topk_info``: the same tokens, the same
    inputs, across ``</think>``, Cold Stop and the after-thinking abort (EOS here); Cold Stop
    fires at the same steps (read off the handle's recorded state)."""
    model = smol[1]
    config = with_think_end(SOFT[name], top1_trace)
    records, tokens, config = run_soft(smol, config, greedy)
    table = model.get_input_embeddings().weight.detach()
    temperature = 1.0 if greedy else SOFT_RECIPE["temperature"]
    totals: dict[str, int] = {"engine_cold_stops": 0}
    for b in range(len(PROMPTS)):
        steps = [
            faithfulness.Step(
                int(r.rows.position[b]), r.prior[b], int(r.sampled[b]), int(r.emitted[b]),
                r.mixed[b], r.raw[b].float() / temperature,
            )
            for r in records
        ]  # fmt: skip
        assert [s.emitted for s in steps] == tokens[b, : len(steps)].tolist()
        counts = faithfulness.soft_thinking(
            steps, config, table, 5 + b, SOFT_RECIPE["top_k"], SOFT_RECIPE["top_p"], greedy
        )
        engine = sum(faithfulness.engine_cold_stop(r.rows, r.state, b) for r in records)
        assert counts["cold_stops"] == engine, (counts, engine)
        totals["engine_cold_stops"] += engine
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    assert totals["switches"] >= 1, totals  # the first row crossed its </think>
    if "forced" in name:
        assert totals["cold_stops"] == 2, totals
        # Without noise the release aborts 4 tokens after </think>: here both rows emit EOS
        # there, and generate stops (no later step is recorded). With noise: no abort.
        ended = bool((tokens[:, 8] == smol[0].eos_token_id).all()) and tokens.shape[1] == 9
        assert ended == (config.noise == "none"), tokens
    if name == "cold stop":
        assert totals["cold_stops"] >= 1, totals


def test_hf_soft_thinking_tokens_do_not_depend_on_the_seed(smol, top1_trace):
    """Without noise the thinking trace is the top-1 of each step: two sampling seeds emit the
    same tokens; emitting the sampled token instead (``soft_emit="sample"``) they differ."""
    _, tokens, _ = run_soft(smol, MoIConfig(mode="soft", think_end=NEVER), False, 2)
    assert torch.equal(tokens, top1_trace[1])
    sample = MoIConfig(mode="soft", think_end=NEVER, soft_emit="sample")
    _, sampled, _ = run_soft(smol, sample, False, 2)
    assert not torch.equal(sampled, top1_trace[1])
