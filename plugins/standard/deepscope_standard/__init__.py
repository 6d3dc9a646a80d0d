"""deepscope-standard: the vision toolkit every other plugin reuses.

Importing this module is cheap: it imports only the attrs config classes;
each factory is a "module:attr" string that the core imports on first use.
``__all__`` is what other plugins may use; the names that need torch load on
first access (PEP 562), so ``import deepscope_standard`` never imports torch.
Other plugins import from here only, never from a submodule.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from deepscope import hookimpl

from . import (attack_gap_config, attacks_config, datasets_config, distill_config, models_config, probes_config, trainers_config,
               smoothing_config, worst_case_config)
from .trainers_config import TrainConfig

#: public name -> the submodule that defines it (imported on first access)
_LAZY = {
    "StandardTrainer": "deepscope_standard.trainers",
    "train_loop": "deepscope_standard.trainers",
    "train_model": "deepscope_standard.trainers",
    "evaluate": "deepscope_standard.trainers",
    "hard_labels": "deepscope_standard.trainers",
    "supervised_loss": "deepscope_standard.trainers",
    "pgd": "deepscope_standard.attacks",
    "fgsm": "deepscope_standard.attacks",
    "ascend": "deepscope_standard.attacks",
    "apgd": "deepscope_standard.autopgd",
    "dlr": "deepscope_standard.autopgd",
    "square": "deepscope_standard.square_attack",
    "sgd_step": "deepscope_standard.diffopt",
    "adam_step": "deepscope_standard.diffopt",
    "flatten_params": "deepscope_standard.diffopt",
    "unflatten_params": "deepscope_standard.diffopt",
    "DistilledEval": "deepscope_standard.distilled_eval",
    "class_balanced_prefix": "deepscope_standard.distilled_eval",
    "train_on_set": "deepscope_standard.distilled_eval",
    "train_in_code": "deepscope_standard.distilled_eval",
    "flip_rotate": "deepscope_standard.augment",
    "DSA": "deepscope_standard.augment",
    "log_synthetic_grid": "deepscope_standard.grid",
    "SyntheticBaseline": "deepscope_standard.baselines",
    "random_real": "deepscope_standard.baselines",
    "class_means": "deepscope_standard.baselines",
    "fit_zca": "deepscope_standard.zca",
    "record_perturbations": "deepscope_standard.recorded",
    "recorded_perturbations": "deepscope_standard.recorded",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deepscope_standard' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["TrainConfig", *_LAZY]


@hookimpl
def deepscope_register_datasets(register):
    datasets_config.register(register)


@hookimpl
def deepscope_register_models(register):
    models_config.register(register)


@hookimpl
def deepscope_register_trainers(register):
    trainers_config.register(register)


@hookimpl
def deepscope_register_attacks(register):
    attacks_config.register(register)


@hookimpl
def deepscope_register_probes(register):
    probes_config.register(register)
    distill_config.register_probes(register)
    worst_case_config.register(register)
    attack_gap_config.register(register)
    smoothing_config.register(register)


@hookimpl
def deepscope_register_distillers(register):
    distill_config.register_distillers(register)
