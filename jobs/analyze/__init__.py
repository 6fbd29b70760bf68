"""The appendix analyses of Buono et al., "Not All CAMs Are Complete" (``camgrid analyze``).

* :mod:`jobs.analyze.convergence`: App. B, the Monte Carlo budgets ``M`` (Fig. 6) and ``N`` (Fig. 7);
* :mod:`jobs.analyze.saturation`: App. C.1, internal saturation along ``α·x`` (Figs. 9–12);
* :mod:`jobs.analyze.run` and :mod:`jobs.analyze.output`: the jobs around them, :mod:`jobs.analyze.cli` the commands.
"""

from jobs.analyze.convergence import (
    MSweep,
    NSweep,
    SmallReferencePoolWarning,
    Subject,
    eg_regression,
    m_sweep,
    n_sweep,
    rank_bound,
)
from jobs.analyze.saturation import SaturationCurves, saturation_curves

__all__ = [
    "MSweep",
    "NSweep",
    "SaturationCurves",
    "SmallReferencePoolWarning",
    "Subject",
    "eg_regression",
    "m_sweep",
    "n_sweep",
    "rank_bound",
    "saturation_curves",
]
