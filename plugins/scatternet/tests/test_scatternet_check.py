"""check_plugin over everything deepscope-scatternet registers: every factory resolves, every default config builds.

That registry.toml lists exactly these components is tests/test_registry_toml.py's job.
"""

from __future__ import annotations

import deepscope_scatternet
from deepscope.testing import check_plugin


def test_every_component_resolves_and_builds_with_its_defaults():
    report = check_plugin(deepscope_scatternet)
    assert report and all(r.status.startswith("ok") or r.status.startswith("needs") for r in report), report
