"""The standard plugin's public part: every name in ``__all__`` resolves, and importing stays torch-free."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import deepscope_standard


def test_every_public_name_imports_and_is_the_submodule_object():
    from deepscope_standard import _LAZY, trainers_config

    home = {"TrainConfig": trainers_config}
    assert {"StandardTrainer", "TrainConfig", "train_loop", "train_model", "evaluate", "pgd", "ascend",
            "hard_labels"} <= set(deepscope_standard.__all__)
    for name in deepscope_standard.__all__:
        value = getattr(deepscope_standard, name)
        module = home.get(name) or importlib.import_module(_LAZY[name])
        assert value is getattr(module, name), name


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'train_modle'"):
        deepscope_standard.train_modle  # noqa: B018


def test_importing_the_package_does_not_import_torch():
    code = "import deepscope_standard, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


PLUGINS = Path(__file__).resolve().parents[2]
PRIVATE_CORE = re.compile(r"^\s*(?:from|import)\s+deepscope\.(?!testing\b)(\w+)", re.M)
#: a submodule of another first-party plugin (``deepscope_ntk.kip``): plugins build on each other's top level only
PLUGIN_SUBMODULE = re.compile(r"^\s*(?:from|import)\s+(deepscope_\w+)\.(\w+)", re.M)


def test_first_party_plugins_import_only_public_names():
    sources = sorted(p for p in PLUGINS.glob("*/**/*.py") if "build" not in p.relative_to(PLUGINS).parts)
    assert {"collapse", "scatternet", "goldilocks", "sparsity"} <= {p.relative_to(PLUGINS).parts[0] for p in sources}
    offences = []
    for path in sources:
        text = path.read_text()
        offences += [f"{path.relative_to(PLUGINS)}: deepscope.{m}" for m in PRIVATE_CORE.findall(text)]
        own = "deepscope_" + path.relative_to(PLUGINS).parts[0].replace("-", "_")
        offences += [f"{path.relative_to(PLUGINS)}: {package}.{m}"
                     for package, m in PLUGIN_SUBMODULE.findall(text) if package != own]
    assert offences == [], ("import these from `deepscope` / the other plugin's top level (`deepscope_standard`, "
                            "`deepscope_ntk`) instead:\n" + "\n".join(offences))


def test_the_ntk_plugins_public_names_resolve_without_importing_torch_first():
    import deepscope_ntk

    for name in deepscope_ntk.__all__:
        assert getattr(deepscope_ntk, name) is not None, name
    code = "import deepscope_ntk, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
