"""Tests of kit.explore."""
