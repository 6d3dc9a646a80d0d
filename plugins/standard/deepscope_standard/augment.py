"""Differentiable augmentations for dataset distillation: RaT-BPTT's flip-or-rotate, and DSA.

Every function draws its random parameters from an explicit ``torch.Generator`` (never the global
RNG), so a run is reproducible and the same draw can be replayed on a second batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .distill_config import DSA_OPS  # one list, torch-free, shared with the config check


def flip_rotate(x: torch.Tensor, generator: torch.Generator, *, flip_prob: float = 0.5,
                max_degrees: float = 15.0, prob: float = 1.0) -> torch.Tensor:
    """RaT-BPTT's ``flip_rotate``: per call, either a horizontal flip of each image with ``flip_prob`` or a
    rotation of each image by an angle uniform in [-max_degrees, max_degrees] (bilinear
    ``affine_grid``/``grid_sample``, zero padding, ``align_corners=False``, as the official code).
    ``prob`` is the chance that an image is augmented at all (1 officially; 0 is the identity).
    Differentiable in ``x``."""
    choice = torch.randint(0, 2, (1,), generator=generator).item()
    n = x.shape[0]
    if choice == 0:
        flip = torch.rand(n, 1, 1, 1, generator=generator) < flip_prob
        out = torch.where(flip.to(x.device), x.flip(3), x)
    else:
        angle = (torch.rand(n, generator=generator, dtype=torch.float64) - 0.5) * 2 * math.radians(max_degrees)
        out = rotate(x, angle.to(x.dtype))
    keep = (torch.rand(n, 1, 1, 1, generator=generator) < prob).to(x.device)
    return torch.where(keep, out, x)


def rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate each image by ``angle`` (radians, one per image) about its centre, bilinear, zero padding."""
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


# --------------------------------------------------------------------------- DSA (Zhao & Bilen, ICML 2021)

DSA_DEFAULT = "color_crop_cutout_flip_scale_rotate"


class DSA:
    """Differentiable Siamese Augmentation, as DC/DSA/MTT's ``DiffAugment`` with ``ParamDiffAug``'s constants.

    ``strategy`` is "_"-joined ops from ``DSA_OPS``; ``single`` (the official ``aug_mode = 'S'``) applies one
    op chosen at random per call (``color`` is brightness, saturation and contrast in turn), otherwise
    all in the strategy's order. ``sample(shape, seed)`` draws the parameters (under a forked RNG: the
    global one is left alone) and ``apply(x, params)`` replays them, on the real and on the synthetic
    batch alike: that shared draw is the Siamese augmentation. ``siamese = True`` draws one transform
    for the whole batch (as the official ``Siamese`` flag), so it replays on batches of any size; else
    each image has its own and a replay needs the same batch size. ``prob`` is the chance that an image
    is augmented at all (1 in the official code; 0 is the identity). flip, crop and rotate are kornia's
    (``RandomHorizontalFlip``, ``RandomCrop`` with zero padding, ``RandomRotation``: the same
    distributions and interpolation as the official code on square images); color, scale and cutout
    are written here because kornia's differ (its color jitter clamps to [0, 1] and saturates in HSV,
    its affine scale samples the zoom, not its inverse, uniformly; its erasing is not a fixed square).
    """

    def __init__(self, strategy: str = DSA_DEFAULT, *, single: bool = True, siamese: bool = False,
                 prob: float = 1.0, flip_prob: float = 0.5, scale_ratio: float = 1.2, rotate_degrees: float = 15.0,
                 crop_pad_ratio: float = 0.125, cutout_ratio: float = 0.5, brightness: float = 1.0,
                 saturation: float = 2.0, contrast: float = 0.5):
        ops = [op for op in strategy.split("_") if op]
        unknown = [op for op in ops if op not in DSA_OPS]
        if unknown or not ops:
            raise ValueError(f"unknown DSA op(s) {unknown} in {strategy!r}; use '_'-joined names from {DSA_OPS}")
        self.ops, self.single, self.siamese, self.prob = ops, single, siamese, prob
        self.flip_prob, self.scale_ratio, self.rotate_degrees = flip_prob, scale_ratio, rotate_degrees
        self.crop_pad_ratio, self.cutout_ratio = crop_pad_ratio, cutout_ratio
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast
        self._kornia: dict = {}

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape, seed))

    # -- sampling --------------------------------------------------------------
    def sample(self, shape, seed: int) -> dict:
        """The parameters of one draw for batches of ``shape`` (N, C, H, W), from ``seed``."""
        n, c, h, w = shape
        draws = 1 if self.siamese else n
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            ops = [self.ops[int(torch.randint(len(self.ops), (1,)))]] if self.single else list(self.ops)
            params = {"ops": ops, "n": draws, "apply": torch.rand(draws) < self.prob}
            for op in ops:
                params[op] = self._sample_op(op, (draws, c, h, w))
        return params

    def _sample_op(self, op: str, shape) -> dict:
        n, _, h, w = shape
        if op == "color":
            return {"brightness": torch.rand(n), "saturation": torch.rand(n), "contrast": torch.rand(n)}
        if op == "scale":
            low, high = 1.0 / self.scale_ratio, self.scale_ratio
            return {"sx": torch.rand(n) * (high - low) + low, "sy": torch.rand(n) * (high - low) + low}
        if op == "cutout":
            sh, sw = int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5)
            return {"size": (sh, sw), "x": torch.randint(0, h + (1 - sh % 2), (n,)),
                    "y": torch.randint(0, w + (1 - sw % 2), (n,))}
        return self._kornia_op(op, h, w).forward_parameters(torch.Size(shape))

    def _kornia_op(self, op: str, h: int, w: int):
        key = (op, h, w)
        if key not in self._kornia:
            import kornia.augmentation as K

            if op == "flip":
                self._kornia[key] = K.RandomHorizontalFlip(p=self.flip_prob)
            elif op == "rotate":
                self._kornia[key] = K.RandomRotation(degrees=self.rotate_degrees, p=1.0)
            else:  # crop: an integer translation in [-pad, pad] per axis, zero fill
                pad = (int(h * self.crop_pad_ratio + 0.5), int(w * self.crop_pad_ratio + 0.5))
                self._kornia[key] = K.RandomCrop((h, w), padding=(pad[1], pad[0]), fill=0.0, p=1.0)
        return self._kornia[key]

    # -- applying --------------------------------------------------------------
    def apply(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """The transform ``params`` describes, applied to ``x`` (differentiable in ``x``)."""
        n = x.shape[0]
        if params["n"] != n and params["n"] != 1:
            raise ValueError(f"these DSA parameters were drawn for {params['n']} images, not {n}; draw with "
                             "siamese = True to replay one transform on batches of any size")
        out = x
        for op in params["ops"]:
            out = self._apply_op(op, out, _expand(params[op], params["n"], n, x))
        keep = _expand({"apply": params["apply"]}, params["n"], n, x)["apply"].view(n, 1, 1, 1)
        return torch.where(keep, out, x)

    def _apply_op(self, op: str, x: torch.Tensor, p: dict) -> torch.Tensor:
        if op == "color":
            x = x + (p["brightness"].view(-1, 1, 1, 1).to(x.dtype) - 0.5) * self.brightness
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (p["saturation"].view(-1, 1, 1, 1).to(x.dtype) * self.saturation) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - mean) * (p["contrast"].view(-1, 1, 1, 1).to(x.dtype) + self.contrast) + mean
        if op == "scale":
            zero = torch.zeros_like(p["sx"])
            theta = torch.stack([torch.stack([p["sx"], zero, zero], 1), torch.stack([zero, p["sy"], zero], 1)], 1)
            grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
            return F.grid_sample(x, grid, align_corners=True)
        if op == "cutout":
            (sh, sw), h, w = p["size"], x.shape[2], x.shape[3]
            top, left = (p["x"] - sh // 2).view(-1, 1, 1), (p["y"] - sw // 2).view(-1, 1, 1)
            rows = torch.arange(h, device=x.device).view(1, h, 1)
            cols = torch.arange(w, device=x.device).view(1, 1, w)
            hole = (rows >= top) & (rows < top + sh) & (cols >= left) & (cols < left + sw)
            return x * (~hole).unsqueeze(1).to(x.dtype)
        return self._kornia_op(op, x.shape[2], x.shape[3])(x, params=p)


def _expand(params: dict, drawn: int, n: int, x: torch.Tensor) -> dict:
    """Parameters on ``x``'s device; one siamese draw repeated for all ``n`` images."""
    out = {}
    for k, v in params.items():
        if isinstance(v, torch.Tensor):
            if k == "forward_input_shape":
                v = torch.tensor(list(x.shape))
            elif drawn == 1 and n != 1 and v.dim() > 0 and v.shape[0] == 1:
                v = v.expand(n, *v.shape[1:])
            v = v.to(x.device)
        out[k] = v
    return out
