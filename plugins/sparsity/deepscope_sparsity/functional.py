"""Linearizing functional ops (``F.relu``, ``F.max_pool2d``, ``x.softmax()``...) called inside ``forward``.

Module replacement (``linearize.linear_stand_in``) cannot see a function
call, so a functional max-pool stayed a max-pool in the linearized copy and
routed every gradient to one input of each window: weights feeding the other
positions looked disconnected. Where the model traces with ``torch.fx``, the
graph is rewritten: activations, normalizations, dropout and softmax become the
identity, max-pooling becomes average pooling over the same windows. Where it
does not trace (data-dependent control flow), a warning names the model once
and the module-level replacement alone is used, as before.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F

_IDENTITY_FUNCTIONS = {
    F.relu, F.relu6, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.leaky_relu, F.hardtanh, F.hardswish,
    F.hardsigmoid, F.softplus, F.softsign, F.sigmoid, F.tanh, F.logsigmoid, F.softmax, F.log_softmax,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.batch_norm, F.layer_norm,
    F.group_norm, F.instance_norm, F.local_response_norm, F.normalize,
    torch.relu, torch.sigmoid, torch.tanh, torch.softmax, torch.log_softmax, torch.dropout, torch.selu,
    torch.relu_, torch.sigmoid_, torch.tanh_,
}
_IDENTITY_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "softmax", "log_softmax"}
_WARNED: set[str] = set()


def _avg_like_max(dims: int):
    avg = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]

    def pool(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        if dilation not in (1, (1,) * dims, [1] * dims):
            raise NotImplementedError("a dilated max-pool has no average-pool stand-in")
        return avg(input, kernel_size, stride, padding, ceil_mode=ceil_mode, count_include_pad=True)

    pool.__name__ = f"linearized_max_pool{dims}d"
    return pool


linearized_max_pool1d, linearized_max_pool2d, linearized_max_pool3d = (_avg_like_max(d) for d in (1, 2, 3))


def linearized_adaptive_max_pool1d(input, output_size, return_indices=False):
    return F.adaptive_avg_pool1d(input, output_size)


def linearized_adaptive_max_pool2d(input, output_size, return_indices=False):
    return F.adaptive_avg_pool2d(input, output_size)


def linearized_adaptive_max_pool3d(input, output_size, return_indices=False):
    return F.adaptive_avg_pool3d(input, output_size)


_POOLS = {
    F.max_pool1d: linearized_max_pool1d, F.max_pool2d: linearized_max_pool2d, F.max_pool3d: linearized_max_pool3d,
    torch.max_pool1d: linearized_max_pool1d, torch.max_pool2d: linearized_max_pool2d,
    torch.max_pool3d: linearized_max_pool3d,
    F.adaptive_max_pool1d: linearized_adaptive_max_pool1d, F.adaptive_max_pool2d: linearized_adaptive_max_pool2d,
    F.adaptive_max_pool3d: linearized_adaptive_max_pool3d,
}


def _first_input(node):
    return node.args[0] if node.args else node.kwargs.get("input", node.kwargs.get("self"))


def linearize_functional(net: nn.Module, model_name: str) -> nn.Module:
    """``net`` with its functional non-linear ops rewritten (an fx GraphModule), or ``net`` itself.

    ``net`` itself comes back when there is nothing to rewrite, and, with one
    warning per model class, when the model does not trace or the trace would
    change its parameter names.
    """
    try:
        traced = torch.fx.symbolic_trace(net)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "use the module-level replacement"
        _warn_once(model_name, f"it does not trace with torch.fx ({type(exc).__name__}: {str(exc)[:200]})")
        return net
    changed = False
    for node in list(traced.graph.nodes):
        if node.op == "call_function" and node.target in _POOLS:
            node.target = _POOLS[node.target]
            changed = True
        elif (node.op == "call_function" and node.target in _IDENTITY_FUNCTIONS) or (
                node.op == "call_method" and node.target in _IDENTITY_METHODS):
            node.replace_all_uses_with(_first_input(node))
            traced.graph.erase_node(node)
            changed = True
    if not changed:
        return net
    if list(dict(traced.named_parameters())) != list(dict(net.named_parameters())):
        _warn_once(model_name, "its torch.fx trace does not keep every parameter under its name")
        return net
    traced.graph.lint()
    traced.recompile()
    return traced


def _warn_once(model_name: str, why: str) -> None:
    if model_name in _WARNED:
        return
    _WARNED.add(model_name)
    warnings.warn(f"effective sparsity / SynFlow: {model_name}: functional activations, softmax and max-pooling "
                  f"called inside forward (F.relu, F.max_pool2d, ...) are not linearized because {why}; "
                  "nn.Module layers still are. Use module layers (nn.ReLU, nn.MaxPool2d) in such a model, or "
                  "make its forward traceable, for exact effective masks.", stacklevel=3)
