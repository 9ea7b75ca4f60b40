"""Seed-case scenarios: evidence builders with their ground truth (test fixtures)."""
