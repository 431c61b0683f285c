"""Tests of kit.units and kit.errors."""
