"""Empirical neural tangent kernel of any nn.Module that returns logits.

Theta(x, x')[a, b] = <d f_a(x) / d theta, d f_b(x') / d theta>, summed over every parameter.
Two ways to compute it (as in the torch.func NTK tutorial, written here for chunks of examples):

- ``"jacobian"``: per-example Jacobians (``vmap(jacrev)``), then a contraction; cost about
  N * O * [forward] + N^2 * O^2 * P, memory chunk * O * P per side;
- ``"ntk-vp"``: NTK-vector products (``vjp`` then ``jvp``) over the basis of one side's outputs;
  no Jacobian is ever stored, cost about N^2 * O * [forward].

Both sides are cut into chunks of ``chunk_size`` examples so memory stays bounded whatever N is.
``"auto"`` picks one of the two by the rule measured with ``benchmarks/bench_ntk.py --crossover``
(``choose_method``). ``empirical_nngp`` is the other empirical kernel of a network at its current
parameters: the inner product of its outputs (or of one layer's features), neural-tangents'
``empirical_nngp_fn``. torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any, Optional

METHODS = ("auto", "jacobian", "ntk-vp")
MODES = ("full", "trace", "diagonal")


def empirical_ntk(model: Any, x1: Any, x2: Any = None, *, method: str = "jacobian", mode: str = "full",
                  chunk_size: Optional[int] = 64, dtype: Any = None) -> Any:
    """The empirical NTK of ``model`` between ``x1`` (n1 examples) and ``x2`` (n2; default ``x1``).

    ``mode``: ``"full"`` gives shape (n1, n2, k, k), ``"trace"`` (n1, n2) (summed over the k outputs),
    ``"diagonal"`` (n1, n2, k). ``chunk_size``: examples per block on each side (None: one block).
    ``dtype``: e.g. ``torch.float64`` to compute on a float64 copy of the parameters and inputs.
    The model is called as it is (call ``model.eval()`` first for batch norm or dropout).
    """
    import torch

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of examples or None, not {chunk_size!r}")
    params = {name: p.detach() for name, p in model.named_parameters()}
    if not params:
        raise ValueError(f"{type(model).__name__} has no parameters, so it has no tangent kernel")
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    if dtype is not None:
        params = {k: v.to(dtype) for k, v in params.items()}
        buffers = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in buffers.items()}
        x1 = x1.to(dtype)
        x2 = None if x2 is None else x2.to(dtype)
    if method == "auto":
        k = _output_width(model, params, buffers, x1)
        method = choose_method(model, len(x1), len(x1) if x2 is None else len(x2), k, mode)
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    step = chunk_size or max(len(x1), len(x2), 1)
    rows = []
    blocks: dict[tuple[int, int], Any] = {}
    for i in range(0, len(x1), step):
        row = []
        row_jacobian = _jacobians(model, params, buffers, x1[i:i + step]) if method == "jacobian" else None
        for j in range(0, len(x2), step):
            if symmetric and j < i:  # K(X, X) is symmetric: reuse the mirrored block
                kij = blocks[(j, i)].transpose(0, 1)
                kij = kij.transpose(2, 3) if mode == "full" else kij
            else:
                if method == "jacobian":  # the row block's Jacobian is computed once per row
                    col = row_jacobian if symmetric and j == i else _jacobians(model, params, buffers, x2[j:j + step])
                    kij = _contract(row_jacobian, col, mode)
                else:
                    kij = _ntk_vp_block(model, params, buffers, x1[i:i + step], x2[j:j + step], mode)
                if symmetric:
                    blocks[(i, j)] = kij
            row.append(kij)
        rows.append(torch.cat(row, dim=1))
    return torch.cat(rows, dim=0)


def has_convolution(model: Any) -> bool:
    """Whether any submodule is a convolution (weights shared over positions: forward cost >> parameters)."""
    from torch import nn

    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


#: fewest outputs at which NTK-vector products beat the Jacobian method on a full kernel of a conv-free model
VP_MIN_OUTPUTS = 3


def choose_method(model: Any, n1: int, n2: int, k: int, mode: str) -> str:
    """The faster method, by the rule measured with ``bench_ntk.py --crossover`` (docs/ntk.md, "Speed").

    On one CPU thread: a convolution makes every forward pass cost far more than the parameter count, so
    the Jacobian method wins by 3 to 100x whatever n, k and mode; without one, the NTK-vector products
    win the ``"full"`` kernel once k >= VP_MIN_OUTPUTS (its cost grows like k, the contraction's like
    k^2), and the ``"trace"``/``"diagonal"`` kernels are a tie within the timing noise, so the Jacobian
    method (the better-tested one) is kept. n1 and n2 did not move the crossover in the range measured
    (8 to 48 examples) and are part of the signature for a rule that needs them. GPU is not measured.
    """
    if has_convolution(model):
        return "jacobian"
    return "ntk-vp" if mode == "full" and k >= VP_MIN_OUTPUTS else "jacobian"


def _output_width(model, params, buffers, x) -> int:
    """k: the number of outputs per example (one forward pass on one example, no graph kept)."""
    import torch

    with torch.no_grad():
        return int(_batch_output(model, params, buffers)(params, x[:1]).shape[1])


def empirical_nngp(model: Any, x1: Any, x2: Any = None, *, mode: str = "full", layer: Optional[str] = None,
                   chunk_size: Optional[int] = 64, dtype: Any = None) -> Any:
    """The empirical NNGP kernel f(x1) f(x2)^T of ``model`` at its current parameters.

    The outputs of each example are flattened to one vector of k entries (with ``layer``, the output of
    the submodule of that name, e.g. ``"body.hidden.0"``, captured by a forward hook; the forward still
    runs to the end). ``mode``: ``"full"`` (n1, n2, k, k), ``"trace"`` (n1, n2) summed over the k entries
    (neural-tangents' ``trace_axes=(-1,)`` divides by k instead), ``"diagonal"`` (n1, n2, k), as
    ``empirical_ntk``. Differentiable in the inputs, never in the parameters. ``chunk_size`` bounds the
    examples per forward pass; ``dtype`` computes on a copy of the parameters in that type.
    """
    import torch

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of examples or None, not {chunk_size!r}")
    f1 = _features(model, x1, layer, chunk_size, dtype)
    f2 = f1 if x2 is None else _features(model, x2, layer, chunk_size, dtype)
    if mode == "full":
        return torch.einsum("na,mb->nmab", f1, f2)
    if mode == "trace":
        return f1 @ f2.T
    return torch.einsum("na,ma->nma", f1, f2)


def _features(model, x, layer, chunk_size, dtype):
    """(n, k): the model's (or one layer's) outputs on x, flattened per example, in chunks."""
    import torch
    from torch.func import functional_call

    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    if dtype is not None:
        params = {k: v.to(dtype) for k, v in params.items()}
        buffers = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in buffers.items()}
        x = x.to(dtype)
    captured = []
    hook = None
    if layer is not None:
        modules = dict(model.named_modules())
        if layer not in modules:
            raise ValueError(f"{type(model).__name__} has no submodule {layer!r}; its submodules: "
                             f"{', '.join(name for name in modules if name) or 'none'}")
        hook = modules[layer].register_forward_hook(lambda module, args, out: captured.append(out))
    step = chunk_size or max(len(x), 1)
    try:
        blocks = []
        for i in range(0, len(x), step):
            out = functional_call(model, (params, buffers), (x[i:i + step],))
            if layer is not None:
                out = captured.pop()
            blocks.append(out.reshape(len(x[i:i + step]), -1))
    finally:
        if hook is not None:
            hook.remove()
    return torch.cat(blocks)


def _single_output(model, params, buffers):
    """f(params, x) for one example x (no batch axis): the model's logits, flattened to (k,)."""
    from torch.func import functional_call

    def f(p, x):
        return functional_call(model, (p, buffers), (x.unsqueeze(0),)).reshape(-1)

    return f


def _batch_output(model, params, buffers):
    """f(params, X) for a batch: (n, k) logits."""
    from torch.func import functional_call

    def f(p, x):
        out = functional_call(model, (p, buffers), (x,))
        return out.reshape(len(x), -1)

    return f


def _jacobians(model, params, buffers, x):
    """Per-example Jacobians of the logits: name -> (n, k, #params of that tensor)."""
    from torch.func import jacrev, vmap

    f = _single_output(model, params, buffers)
    return {name: j.flatten(2) for name, j in vmap(jacrev(f), (None, 0))(params, x).items()}


def _contract(ja, jb, mode):
    import torch

    total = None
    for name in ja:
        a, b = ja[name], jb[name]
        if mode == "full":
            term = torch.einsum("naf,mbf->nmab", a, b)
        elif mode == "trace":
            term = torch.einsum("naf,maf->nm", a, b)
        else:
            term = torch.einsum("naf,maf->nma", a, b)
        total = term if total is None else total + term
    return total


def _ntk_vp_block(model, params, buffers, xa, xb, mode):
    import torch
    from torch.func import jvp, vjp, vmap

    f = _batch_output(model, params, buffers)
    out_a, vjp_a = vjp(lambda p: f(p, xa), params)
    n, k = out_a.shape
    basis = torch.eye(n * k, dtype=out_a.dtype, device=out_a.device).view(n * k, n, k)

    def column(cotangent):  # J_b (J_a^T e) for one basis vector e of side a's outputs
        (tangent,) = vjp_a(cotangent)
        return jvp(lambda p: f(p, xb), (params,), (tangent,))[1]

    full = vmap(column)(basis).view(n, k, len(xb), k).permute(0, 2, 1, 3)  # (n, m, a, b)
    if mode == "full":
        return full
    diagonal = torch.diagonal(full, dim1=2, dim2=3)
    return diagonal.sum(-1) if mode == "trace" else diagonal
