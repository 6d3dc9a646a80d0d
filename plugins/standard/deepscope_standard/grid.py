"""An image grid of a synthetic set (one row per class, de-normalized to pixels), as one PNG artifact."""

from __future__ import annotations

import io

import torch

from .synthetic_choice import chosen_synthetic
from .trainers import hard_labels


def to_pixels(synthetic, info) -> torch.Tensor:
    """The set's images as [N, C, H, W] pixels in [0, 1]: input-space sets go back through the
    preprocessing's inverse and the normalization; flat rows are reshaped to ``info.input_shape``."""
    x = synthetic.x.detach().float().cpu()
    if x.dim() == 2:
        x = x.view(len(x), *info.input_shape)
    if synthetic.space == "input":
        if info.preprocess is not None:
            inverse = getattr(info.preprocess, "inverse", None)
            if not callable(inverse):
                raise TypeError(f"{type(info.preprocess).__name__} has no inverse(z): an input-space set cannot "
                                "be shown as pixels")
            with torch.no_grad():
                x = inverse(x).float().cpu()
        mean = torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1)
        x = x * std + mean
    return x.clamp(0, 1)


def grid_tensor(pixels: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int = 10,
                pad: int = 1) -> torch.Tensor:
    """[C, rows * (H + pad) + pad, cols * (W + pad) + pad]: row r holds the first ``per_class`` images of
    class r in the set's order, left to right; the gaps (and missing images) are white."""
    n, c, h, w = pixels.shape
    classes = hard_labels(labels).cpu()
    cols = max(1, min(per_class, max(int((classes == k).sum()) for k in range(num_classes))))
    grid = torch.ones(c, num_classes * (h + pad) + pad, cols * (w + pad) + pad)
    for k in range(num_classes):
        for j, i in enumerate((classes == k).nonzero().flatten()[:cols].tolist()):
            top, left = pad + k * (h + pad), pad + j * (w + pad)
            grid[:, top:top + h, left:left + w] = pixels[i]
    return grid


def log_synthetic_grid(ctx, synthetic, info, name: str = "synthetic_grid", per_class: int = 10) -> bytes:
    """Draw the set as a class-labelled grid and log it as ``<name>.png``; returns the PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = grid_tensor(to_pixels(synthetic, info), synthetic.y, info.num_classes, per_class)
    h = info.input_shape[1]
    fig = Figure(figsize=(max(2.0, grid.shape[2] / 24), max(2.0, grid.shape[1] / 24)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = grid.permute(1, 2, 0).numpy()
    ax.imshow(image[..., 0] if grid.shape[0] == 1 else image, cmap="gray" if grid.shape[0] == 1 else None,
              vmin=0, vmax=1, interpolation="nearest")
    names = list(info.class_names) or [str(k) for k in range(info.num_classes)]
    ax.set_yticks([1 + k * (h + 1) + h / 2 for k in range(info.num_classes)], names[:info.num_classes])
    ax.set_xticks([])
    ax.set_title(f"{len(synthetic)} images, {synthetic.label_kind} labels")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    data = buf.getvalue()
    ctx.log_artifact(f"{name}.png", data)
    return data


class SyntheticGrid:
    """The ``synthetic-grid`` probe: the image grid of a synthetic set as an artifact."""

    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        c = self.config
        synthetic = chosen_synthetic(state, c.set)
        log_synthetic_grid(ctx, synthetic, state.info, per_class=c.per_class)
        return {"images": float(len(synthetic))}
