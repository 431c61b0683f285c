"""Tests of kit.sim."""
