"""Tests of the command line, install, the bench and the docs."""
