"""Scenario builders: realistic evidence for demos, golden tests and benchmarks."""
