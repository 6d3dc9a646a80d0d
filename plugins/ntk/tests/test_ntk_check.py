"""check_plugin over everything deepscope-ntk registers: every factory resolves, every default config builds.

That registry.toml lists exactly these components is tests/test_registry_toml.py's job.
"""

from __future__ import annotations

import deepscope_standard

import deepscope_ntk
from deepscope.testing import check_plugin, make_host


def test_every_component_resolves_and_builds_with_its_defaults():
    report = check_plugin(deepscope_ntk, host=make_host(deepscope_standard))  # ntk-transfer's default: pgd
    assert report and all(r.status.startswith("ok") or r.status.startswith("needs") for r in report), report


def test_importing_the_plugin_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, deepscope_ntk, deepscope_ntk.empirical, deepscope_ntk.analytic; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
