"""Tests of the vLLM plugin: the step state, guards, releases, and real CPU engines."""
