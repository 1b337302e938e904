"""Evaluation harness: standard decoding vs MoI on reasoning tasks, paired by item and seed.

Tasks are data plus a prompt template plus a pure, deterministic scorer (``countdown``, ``math``,
``gpqa``). ``runner`` drives any backend through ``generate(prompts, settings)`` and writes one
JSONL record per sample (resumable); ``report`` turns records into accuracies with confidence
intervals, paired differences, McNemar tests, a markdown table and a plot. Nothing here imports
vLLM: backends do.
"""
