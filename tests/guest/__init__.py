"""Tests of kit.guest."""
