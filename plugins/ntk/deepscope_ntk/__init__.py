"""deepscope-ntk: neural tangent kernels for any registered model.

Empirical NTK (``deepscope_ntk.empirical``), the analytic NTK/NNGP of fully connected ReLU networks
(``deepscope_ntk.analytic``), kernel ridge regression as a model, and kernel statistics as a probe.
Material of Kempe's lecture notes (arXiv:2307.02693) and Tsilivis & Kempe (arXiv:2210.05577).
Importing this module is cheap: factories are "module:attr" strings loaded on first use.
"""

from __future__ import annotations
