"""Tests of kit.kvm."""
