"""Which distilled set a probe reads: its ``set`` parameter, as a clear config error when there is none."""

from __future__ import annotations

from deepscope import ConfigError


def chosen_synthetic(state, name: str):
    """``state.synthetic_set(name)``, or a ConfigError on key ``set`` that says how to fix it."""
    try:
        return state.synthetic_set(name)
    except LookupError as exc:
        raise ConfigError(f"{exc}. Set `set` to \"synthetic\" or to \"synthetic/<stage name>\" of a distill stage "
                          "that runs before this probe.", key="set") from None
