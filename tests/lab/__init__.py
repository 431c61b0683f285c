"""Tests of kit.lab."""
