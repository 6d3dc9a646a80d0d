"""The ``prototype-grid`` probe: a distilled set drawn as class-labelled prototype images.

MTT's display: back to pixels (inverse ZCA, de-normalization, no clamp), the whole set clipped to its
mean +- ``clip_sigma`` standard deviations, then each image min-max scaled to [0, 1] (``make_grid(...,
normalize=True, scale_each=True)``). Without ``clip_sigma``: pixels clamped to [0, 1]. One PNG of the
grid (a row per class) and, optionally, one PNG per class.
"""

from __future__ import annotations

import io

import torch

from deepscope import ConfigError


def to_pixels(synthetic, info) -> torch.Tensor:
    """The set's images as pixels [N, C, H, W], unclamped (input-space sets go back through the model's
    preprocessing inverse and the normalization)."""
    x = synthetic.x.detach().float().cpu()
    if x.dim() == 2:
        x = x.view(len(x), *info.input_shape)
    if synthetic.space == "input":
        if info.preprocess is not None:
            with torch.no_grad():
                x = info.preprocess.inverse(x).float().cpu()
        mean = torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1)
        x = x * std + mean
    return x


def display(pixels: torch.Tensor, clip_sigma: float | None) -> torch.Tensor:
    """What is shown, in [0, 1]."""
    if clip_sigma is None:
        return pixels.clamp(0, 1)
    mean, std = pixels.mean(), pixels.std()
    x = pixels.clamp(mean - clip_sigma * std, mean + clip_sigma * std)
    low = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
    high = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    return (x - low) / (high - low).clamp_min(1e-5)


def class_rows(labels: torch.Tensor, num_classes: int, per_class: int) -> list[list[int]]:
    """Row k: the indices of the first ``per_class`` images of class k, in the set's order."""
    classes = labels if labels.dim() == 1 else labels.argmax(1)
    return [(classes.cpu() == k).nonzero().flatten()[:per_class].tolist() for k in range(num_classes)]


def grid_image(images: torch.Tensor, rows: list[list[int]], pad: int = 2) -> torch.Tensor:
    """[C, H', W'] with one row per class (white gaps and missing images)."""
    _, c, h, w = images.shape
    cols = max(1, max(len(r) for r in rows))
    grid = torch.ones(c, len(rows) * (h + pad) + pad, cols * (w + pad) + pad)
    for k, row in enumerate(rows):
        for j, i in enumerate(row):
            top, left = pad + k * (h + pad), pad + j * (w + pad)
            grid[:, top:top + h, left:left + w] = images[i]
    return grid


def png(image: torch.Tensor, names: list[str] | None = None, row_height: int | None = None,
        title: str = "") -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c, height, width = image.shape
    fig = Figure(figsize=(max(2.0, width / 40), max(2.0, height / 40)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    array = image.permute(1, 2, 0).numpy()
    ax.imshow(array[..., 0] if c == 1 else array, cmap="gray" if c == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    if names and row_height:
        ax.set_yticks([2 + k * (row_height + 2) + row_height / 2 for k in range(len(names))], names)
    else:
        ax.set_yticks([])
    if title:
        ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()


class PrototypeGrid:
    def __init__(self, config):
        self.config = config

    def measure(self, state, ctx) -> dict[str, float]:
        c = self.config
        try:
            synthetic = state.synthetic_set(c.set)
        except LookupError as exc:
            raise ConfigError(f"{exc}. Set `set` to \"synthetic\" or \"synthetic/<stage name>\" of an earlier "
                              "distill stage.", key="set") from None
        info = state.info
        shown = display(to_pixels(synthetic, info), c.clip_sigma)
        rows = class_rows(synthetic.y, info.num_classes, c.per_class)
        names = list(info.class_names) or [str(k) for k in range(info.num_classes)]
        clip = f", clipped at {c.clip_sigma} sigma" if c.clip_sigma else ""
        ctx.log_artifact("prototypes.png", png(grid_image(shown, rows), names[:info.num_classes], shown.shape[2],
                                                f"{len(synthetic)} prototypes{clip}"))
        if c.per_class_files:
            for k, row in enumerate(rows):
                if row:
                    ctx.log_artifact(f"prototypes/class_{k}.png", png(grid_image(shown, [row]), title=names[k]))
        return {"images": float(len(synthetic)), "classes_shown": float(sum(1 for r in rows if r))}
