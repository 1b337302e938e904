"""Tests of the transformers path (``mixinputs.hf``)."""
