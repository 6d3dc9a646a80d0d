"""What a weights_only checkpoint can hold: tensors, numbers, strings, and lists and dicts of them.

The bottom layer of persistence, shared by the run state, distilled sets and checkpoints.
"""

from __future__ import annotations

from typing import Any, Mapping


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """Refuse, at save time, anything ``torch.load(weights_only=True)`` would refuse at resume time."""
    import torch

    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; checkpoints hold str/int keys")
            check_plain(item, f"{where}.{key}")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}, which a weights_only checkpoint cannot hold; save "
                    "tensors, numbers, strings, lists and dicts (e.g. an object's state_dict())")


def is_plain(value: Any) -> bool:
    """Whether :func:`check_plain` accepts ``value``."""
    try:
        check_plain(value)
    except TypeError:
        return False
    return True
