"""Parquet manifests in, Arrow result datasets out, Polars rank tables."""
