"""Tests of the mixing core: candidates, weights, the fused Triton step, and the GPU checks."""
