"""Benchmarks: each compares the project against a raw baseline measured in the same run."""
