"""Loss Hessians of a network as a function of its flattened parameters.

Everything here works on one flat parameter vector ``theta`` so that random
subspaces, Hutchinson probes and Lanczos vectors are plain tensors. The loss is
an example-weighted average over batches, so splitting the data into batches
changes memory use but not the result.

Two Hessian-vector-product engines compute the same thing:
- ``"forward-over-reverse"``: ``jvp(grad(loss))`` from torch.func, vmapped
  over many vectors at once;
- ``"double-backprop"``: ``autograd.grad`` of the gradient, batched over the
  vectors with ``is_grads_batched``, reusing one graph per batch.
``benchmarks/bench_goldilocks_hessian.py`` compares them.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Literal, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

HvpMode = Literal["forward-over-reverse", "double-backprop"]
Batch = tuple[torch.Tensor, ...]
#: objective(logits, *batch_rest) -> scalar mean over the batch
Objective = Callable[..., torch.Tensor]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, y)


class FlatModel:
    """A module viewed as ``logits = f(theta, x)`` of one flat parameter vector."""

    def __init__(self, model: nn.Module, names: Sequence[str] | None = None):
        params = dict(model.named_parameters())
        self.names = list(names) if names is not None else [n for n, p in params.items() if p.requires_grad]
        self.model = model
        self.shapes = [params[n].shape for n in self.names]
        self.numels = [params[n].numel() for n in self.names]
        self.frozen = {n: p.detach() for n, p in params.items() if n not in self.names}
        self.buffers = dict(model.named_buffers())
        self.theta = torch.cat([params[n].detach().reshape(-1) for n in self.names])

    @property
    def dim(self) -> int:
        return self.theta.numel()

    def blocks(self) -> dict[str, slice]:
        """Where each parameter tensor lives in the flat vector."""
        out, start = {}, 0
        for name, n in zip(self.names, self.numels):
            out[name] = slice(start, start + n)
            start += n
        return out

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(theta, self.numels)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes)}

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tensors = {**self.buffers, **self.frozen, **self.unflatten(theta)}
        return functional_call(self.model, tensors, (x,))


def split_batches(tensors: Sequence[torch.Tensor], batch_size: int) -> list[Batch]:
    """Cut aligned tensors (x, y, ...) into batches along the first dimension."""
    n = tensors[0].shape[0]
    return [tuple(t[i:i + batch_size] for t in tensors) for i in range(0, n, batch_size)]


class LossHessian:
    """Products with the Hessian of an example-weighted mean loss over ``batches``."""

    def __init__(self, flat: FlatModel, batches: Sequence[Batch], objective: Objective = cross_entropy,
                 mode: HvpMode = "forward-over-reverse", chunk_size: int | None = None,
                 theta: torch.Tensor | None = None):
        self.flat = flat
        self.batches = list(batches)
        self.objective = objective
        self.mode = mode
        self.chunk_size = chunk_size
        self.theta = flat.theta if theta is None else theta
        total = sum(b[0].shape[0] for b in self.batches)
        self.weights = [b[0].shape[0] / total for b in self.batches]

    def batch_loss(self, theta: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.objective(self.flat.logits(theta, batch[0]), *batch[1:])

    def loss(self) -> float:
        with torch.no_grad():
            return float(sum(w * self.batch_loss(self.theta, b) for w, b in zip(self.weights, self.batches)))

    def gradient(self) -> torch.Tensor:
        total = torch.zeros_like(self.theta)
        for w, b in zip(self.weights, self.batches):
            total += w * grad(self.batch_loss)(self.theta, b)
        return total

    def matmul(self, vectors: torch.Tensor) -> torch.Tensor:
        """``H @ v`` for every row ``v`` of ``vectors`` (shape (m, D)) -> (m, D)."""
        vectors = vectors.to(self.theta)
        out = None
        for w, b in zip(self.weights, self.batches):
            hv = self._batch_matmul(b, vectors)
            if out is None:  # no zero-filled (m, D) buffer: on the CPU it costs as much as the products' bookkeeping
                out = hv if w == 1.0 else hv.mul_(w)
            else:
                out += w * hv
        return out

    def _batch_matmul(self, batch: Batch, vectors: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            # torch's forward-mode AD scripts its decompositions on first use and warns that jit.script is
            # deprecated: nothing a user of this probe can act on
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script`", category=FutureWarning)
            return self._batch_matmul_unfiltered(batch, vectors)

    def _batch_matmul_unfiltered(self, batch: Batch, vectors: torch.Tensor) -> torch.Tensor:
        if self.mode == "forward-over-reverse":
            grad_fn = grad(lambda t: self.batch_loss(t, batch))

            def hvp(v):
                return jvp(grad_fn, (self.theta,), (v,))[1]

            if vectors.shape[0] == 1:  # Lanczos: vmap's set-up would cost more than the product
                return hvp(vectors[0]).unsqueeze(0)
            return vmap(hvp, chunk_size=self.chunk_size)(vectors)
        if self.mode == "double-backprop":
            with torch.enable_grad():
                theta = self.theta.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self.batch_loss(theta, batch), theta, create_graph=True)
                out = torch.empty_like(vectors)
                step = self.chunk_size or vectors.shape[0]
                for i in range(0, vectors.shape[0], step):
                    chunk = vectors[i:i + step]
                    if chunk.shape[0] == 1:
                        (hv,) = torch.autograd.grad(g, theta, grad_outputs=chunk[0], retain_graph=True)
                    else:
                        (hv,) = torch.autograd.grad(g, theta, grad_outputs=chunk, retain_graph=True,
                                                    is_grads_batched=True)
                    out[i:i + step] = hv.reshape(chunk.shape)
                return out
        raise ValueError(f"'hvp' must be 'forward-over-reverse' or 'double-backprop': {self.mode!r}")

    def subspace(self, basis: torch.Tensor) -> torch.Tensor:
        """The exact d x d Hessian ``P H P^T`` restricted to the rows of ``basis`` (d, D)."""
        hp = self.matmul(basis)
        h = basis.to(hp) @ hp.T
        return (h + h.T) / 2


def random_subspace(dim: int, d: int, generator: torch.Generator, support: slice | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """d sparse random directions (rows) in R^dim, as in the reference code.

    Each entry of a column is +-1 with probability 1/sqrt(n) (n = size of the
    support) and 0 otherwise; columns are normalized to unit length and are
    only approximately orthogonal (no QR), like ``get_random_ortho_matrix``.
    """
    support = support if support is not None else slice(0, dim)
    n = support.stop - support.start
    density = 1.0 / math.sqrt(n)
    rows = torch.zeros(d, dim, dtype=dtype)
    for i in range(d):
        while True:
            keep = torch.rand(n, generator=generator) < density
            if keep.any():
                break
        signs = torch.randint(0, 2, (n,), generator=generator).to(dtype) * 2 - 1
        col = signs * keep.to(dtype)
        rows[i, support] = col / col.norm()
    return rows


def positive_curvature(matrix: torch.Tensor) -> float:
    """Tr(M)/||M||_F, in [-sqrt(d), sqrt(d)]; +inf for the zero matrix (as the reference)."""
    fro = torch.linalg.matrix_norm(matrix).item()
    if fro == 0:
        return math.inf
    return torch.trace(matrix).item() / fro


def spectrum_summary(matrix: torch.Tensor) -> dict[str, float]:
    """Curvature ratio, fraction of positive eigenvalues and norms of a symmetric matrix."""
    eig = torch.linalg.eigvalsh((matrix + matrix.T) / 2)
    return {
        "positive_curvature": positive_curvature(matrix),
        "frac_positive": (eig > 0).double().mean().item(),
        "trace": eig.sum().item(),
        "frobenius": eig.pow(2).sum().sqrt().item(),
        "spectral_norm": eig.abs().max().item(),
        "max_eigenvalue": eig.max().item(),
    }


def rademacher(m: int, dim: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """m random +-1 vectors, unpacked from random bytes: 8 signs per draw of the (slow) CPU generator."""
    packed = torch.randint(0, 256, (m, (dim + 7) // 8), dtype=torch.uint8, generator=generator)
    bits = (packed.unsqueeze(-1) >> torch.arange(8, dtype=torch.uint8)) & 1
    return bits.reshape(m, -1)[:, :dim].to(dtype).mul_(2).sub_(1)


def hutchinson(matmul: Callable[[torch.Tensor], torch.Tensor], dim: int, probes: int, generator: torch.Generator,
               dtype: torch.dtype = torch.float32, chunk: int | None = None) -> dict[str, float]:
    """Tr(H) = E[v'Hv] and ||H||_F^2 = E||Hv||^2 over Rademacher v, with standard errors.

    All probes go to ``matmul`` at once unless ``chunk`` caps how many vectors
    are held in memory (each call then rebuilds the gradient graph).
    The Frobenius error uses the delta method: se(sqrt(m)) = se(m) / (2 sqrt(m)).
    """
    quad, sq = [], []
    chunk = chunk or probes
    for start in range(0, probes, chunk):
        v = rademacher(min(chunk, probes - start), dim, generator, dtype)
        hv = matmul(v)
        v = v.to(hv)
        # one dot per row while it is in cache: a batched vecdot streams (m, D) temporaries through memory
        quad += [torch.dot(a, b).double() for a, b in zip(v, hv)]
        sq += [torch.dot(b, b).double() for b in hv]
    quad_t, sq_t = torch.stack(quad), torch.stack(sq)
    n = quad_t.numel()
    se = (lambda t: (t.std() / math.sqrt(n)).item() if n > 1 else math.nan)
    fro = sq_t.mean().sqrt().item()
    return {
        "trace": quad_t.mean().item(),
        "trace_stderr": se(quad_t),
        "frobenius": fro,
        "frobenius_stderr": se(sq_t) / (2 * fro) if fro > 0 else math.nan,
    }


def lanczos_top(matmul: Callable[[torch.Tensor], torch.Tensor], dim: int, steps: int, generator: torch.Generator,
                dtype: torch.dtype = torch.float32) -> float:
    """The most positive eigenvalue (sharpness) by Lanczos with full reorthogonalization.

    Unlike power iteration (PyHessian, hessian-eigenthings), this returns the
    largest algebraic eigenvalue even when a negative one has larger magnitude.
    """
    q = torch.randn(dim, generator=generator, dtype=torch.float64)
    return torch.linalg.eigvalsh(lanczos_tridiagonal(matmul, q, min(steps, dim), dtype)).max().item()


def lanczos_tridiagonal(matmul: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int,
                        dtype: torch.dtype) -> torch.Tensor:
    """The k x k Lanczos tridiagonal from ``start`` (k <= steps; fewer when the Krylov space closes).

    Full reorthogonalization, twice (Kahan), in float64; the products run in ``dtype``.
    """
    q = start.double() / start.double().norm()
    basis, alphas, betas = [q], [], []
    for j in range(min(steps, q.numel())):
        w = matmul(basis[-1].to(dtype).unsqueeze(0))[0].double()
        if w.device != basis[-1].device:  # start vectors are drawn on the CPU (reproducible); follow the model
            basis = [b.to(w.device) for b in basis]
        alpha = torch.dot(w, basis[-1])
        alphas.append(alpha)
        stacked = torch.stack(basis)
        w = w - stacked.T @ (stacked @ w)
        w = w - stacked.T @ (stacked @ w)  # twice is enough (Kahan)
        beta = w.norm()
        if j == steps - 1 or beta < 1e-10 * max(1.0, abs(alpha.item())):
            break
        betas.append(beta)
        basis.append(w / beta)
    k = len(alphas)
    tri = torch.diag(torch.stack(alphas))
    if k > 1:
        off = torch.stack(betas[:k - 1])
        tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
    return tri
