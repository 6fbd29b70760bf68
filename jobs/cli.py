"""The ``camgrid`` command line."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """camgrid: evaluate CAM saliency methods over dataset × architecture grids."""
