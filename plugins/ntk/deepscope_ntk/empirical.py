"""Empirical neural tangent kernel of any nn.Module that returns logits.

Theta(x, x')[a, b] = <d f_a(x) / d theta, d f_b(x') / d theta>, summed over every parameter.
Two ways to compute it (as in the torch.func NTK tutorial, written here for chunks of examples):

- ``"jacobian"``: per-example Jacobians (``vmap(jacrev)``), then a contraction; cost about
  N * O * [forward] + N^2 * O^2 * P, memory chunk * O * P per side;
- ``"ntk-vp"``: NTK-vector products (``vjp`` then ``jvp``) over the basis of one side's outputs;
  no Jacobian is ever stored, cost about N^2 * O * [forward].

Both sides are cut into chunks of ``chunk_size`` examples so memory stays bounded whatever N is.
torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any, Optional

METHODS = ("jacobian", "ntk-vp")
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
