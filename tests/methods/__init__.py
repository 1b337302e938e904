"""Tests of each method against its authors' released step rule (``tests/reference``)."""
