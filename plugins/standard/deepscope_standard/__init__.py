"""deepscope-standard: the vision toolkit every other plugin reuses.

Importing this module is cheap: it imports only the attrs config classes;
each factory is a "module:attr" string that the core imports on first use.
"""

from __future__ import annotations

from deepscope import hookimpl

from . import attacks_config, datasets_config, models_config, probes_config, trainers_config


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
