"""Metrics (Quantus-backed and batched native) and the metric registry — issue 4."""
