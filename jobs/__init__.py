"""Grid specs, presets, the Ray pipeline and the command line."""

import logging

logging.getLogger("camgrid").addHandler(logging.NullHandler())  # the CLI's run log (jobs.run_log) takes its records
