"""Tests of the evaluation harness and its scorers."""
