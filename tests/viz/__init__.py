"""Tests of kit.viz."""
