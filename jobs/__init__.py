"""Grid specs, presets, the Ray pipeline and the command line."""
