"""The mixing core, one concept a file: ``candidates`` (top-K ∪ {y} and the sampler's masks),
``weights`` (entropy, the posterior-mean weights), ``mix`` (Σ w·E in float32, p·E), ``rng`` (the
counter-based generator), ``rows`` (per-row settings and carried state, laid out from the method
registry), ``step`` (the numbered recipe ``apply_methods`` and the reference step). Pure PyTorch:
nothing here imports vLLM or transformers. ``mixinputs.mixing`` re-exports the public names.
"""
