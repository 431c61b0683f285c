"""Tests of kit.host."""
