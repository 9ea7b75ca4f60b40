"""Collector: persistence (to be written)."""

from deminer.collect.bundle import Context


def collect(ctx: Context) -> None:
    """Placeholder until this collector lands."""
    return None
