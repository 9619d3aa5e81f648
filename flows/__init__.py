"""Prefect 3 flows that schedule and sweep the DVC pipeline (they call it, never copy it)."""
