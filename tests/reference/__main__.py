"""``python -m tests.reference``: a smoke test of every transcription on random tensors."""

from __future__ import annotations

import torch

from tests.reference import (
    CounterDraws,
    MultiplexParams,
    MultiplexState,
    SelarParams,
    SoftThinkingParams,
    SoftThinkingState,
    SwirParams,
    SwirState,
    authors_sampling_probs,
    multiplex_reference_step,
    selar_reference_step,
    soft_thinking_reference_step,
    swir_reference_step,
)


def _main() -> None:
    gen = torch.Generator().manual_seed(0)
    vocab, dim, steps = 64, 16, 40
    table = torch.randn(vocab, dim, generator=gen)

    def logits_at(step: int) -> torch.Tensor:
        # Alternate peaked and flat steps so both branches of every gate run.
        scale = 6.0 if step % 3 == 0 else 0.5
        return torch.randn(vocab, generator=gen) * scale

    # SwiReasoning, with a low window and a cap so switches and injections happen.
    swir = SwirParams(
        think_start_id=1,
        think_end_id=2,
        linebreak_id=3,
        eos_id=0,
        window=2,
        max_switch_count=1,
        convergence_ids=(2,),
        termination_ids=(2, 5, 6),
        termination_max_tokens=4,
        max_new_tokens=steps,
        math_ids=frozenset({7}),
    )
    st, emitted = SwirState(), []
    for t in range(steps):
        logits = logits_at(t)
        y = int(torch.multinomial(authors_sampling_probs(logits), 1, generator=gen))
        emb, st, tok = swir_reference_step(logits, y, st, swir, table)
        assert emb.shape == (dim,) and torch.isfinite(emb).all()
        if t == 0 and st.mode == 0 and not st.locked and tok not in swir.math_ids:
            raw = torch.softmax(logits, -1)
            expected = 0.9 * (raw.unsqueeze(0) @ table).squeeze(0) + 0.1 * table[3]
            assert torch.allclose(emb, expected)
        emitted.append(tok)
        if st.finished:
            break
    print(
        f"swir: {len(emitted)} steps, switches {st.switch_count}, mode {st.mode}, "
        f"locked {st.locked}, budget {st.budget}"
    )

    # SeLaR: a flat step gates (latent input), a peaked one does not (plain embedding).
    selar = SelarParams(math_ids=frozenset({7}))
    gated = 0
    for t in range(steps):
        logits = logits_at(t)
        y = int(torch.multinomial(selar.sampling_probs(logits), 1, generator=gen))
        emb, _, tok = selar_reference_step(logits, y, None, selar, table)
        assert tok == y and emb.shape == (dim,) and torch.isfinite(emb).all()
        gated += int(not torch.equal(emb, table[y]))
    print(f"selar: {gated}/{steps} steps fed a latent input")

    # Multiplex: K draws per step until the visible draw is </think>, then plain decoding.
    mp = MultiplexParams(think_end_id=2)
    mst = MultiplexState()
    for t in range(steps):
        logits = logits_at(t)
        if t == steps // 2:
            logits[2] = 50.0  # make </think> certain so the exit path runs
        draws = torch.multinomial(
            mp.sampling_probs(logits), mp.width, replacement=True, generator=gen
        )
        was_thinking = mst.in_thinking
        emb, mst, tok = multiplex_reference_step(logits, draws, mst, mp, table)
        assert tok == int(draws[0]) and emb.shape == (dim,)
        if not was_thinking or tok == 2:
            assert torch.equal(emb, table[tok])
    assert not mst.in_thinking
    print("multiplex: left thinking on the </think> draw; plain inputs afterwards")

    # Soft Thinking: Cold Stop (τ above any entropy, L 3) forces </think>, then the release
    # aborts 3 steps later; Randomized Soft Thinking (Gumbel) does neither count nor abort.
    for release, noise in (("soft_thinking", "none"), ("randomized", "gumbel")):
        params = SoftThinkingParams(
            think_end_id=2, release=release, noise=noise, max_topk=5, top_k=20,
            early_stopping_entropy_threshold=100.0, early_stopping_length_threshold=3,
        )  # fmt: skip
        st, tokens = SoftThinkingState(), []
        for t in range(steps):
            logits = logits_at(t)
            y = int(torch.multinomial(authors_sampling_probs(logits), 1, generator=gen))
            emb, st, tok = soft_thinking_reference_step(
                logits, y, st, params, table, CounterDraws(0, t)
            )
            assert emb.shape == (dim,) and torch.isfinite(emb).all()
            tokens.append(tok)
            if st.finished:
                break
        assert tokens[2] == 2 and st.cold_stops == 1
        assert (st.finished == "abort") == (release == "soft_thinking")
        print(f"soft thinking ({release}): </think> at step 2, {len(tokens)} steps, {st.finished}")


if __name__ == "__main__":
    _main()
