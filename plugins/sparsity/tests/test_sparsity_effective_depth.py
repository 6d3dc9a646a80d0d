"""Effective masks stay exact at any depth: deep MLPs and conv nets against BFS reachability oracles.

The oracles below walk the unit graph (one node per neuron, or per channel and pixel) with explicit
queues and share no code with the plugin, nor with its own graph oracle.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import nn

from deepscope_sparsity.effective import effective_masks


def _reachable(start, neighbours):
    seen, queue = set(start), deque(start)
    while queue:
        node = queue.popleft()
        for nxt in neighbours(node):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def bfs_linear_effective(masks, width_in):
    """masks[l] is (out, in); node (l, j) is unit j of layer l (layer 0 = the input)."""
    out_edges, in_edges = {}, {}
    for layer, mask in enumerate(masks):
        for i, j in mask.nonzero().tolist():
            out_edges.setdefault((layer, j), []).append((layer + 1, i))
            in_edges.setdefault((layer + 1, i), []).append((layer, j))
    from_input = _reachable([(0, j) for j in range(width_in)], lambda n: out_edges.get(n, ()))
    last = len(masks)
    to_output = _reachable([(last, i) for i in range(masks[-1].shape[0])], lambda n: in_edges.get(n, ()))
    result = []
    for layer, mask in enumerate(masks):
        eff = torch.zeros_like(mask)
        for i, j in mask.nonzero().tolist():
            eff[i, j] = (layer, j) in from_input and (layer + 1, i) in to_output
        result.append(eff)
    return result


def thin_chain_beside_dense_block(depth, width=10):
    """Unit 0 feeds only unit 0; units 1..width-1 form a dense block: path counts of 1 against 9^depth."""
    mask = torch.zeros(width, width, dtype=torch.bool)
    mask[0, 0] = True
    mask[1:, 1:] = True
    return [mask.clone() for _ in range(depth)]


def linear_chain(depth, width=10):
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])


def test_thin_chain_beside_a_dense_block_is_exact_at_depth_2000():
    depth = 2000
    masks = thin_chain_beside_dense_block(depth)
    body = linear_chain(depth)
    names = [f"{i}.weight" for i in range(depth)]
    got = effective_masks(body, dict(zip(names, masks)), (10,))
    want = bfs_linear_effective(masks, 10)
    chain = sum(int(got[n][0, 0]) for n in names)
    assert chain == depth  # every weight of the thin chain is on an input-to-output path
    assert all(torch.equal(got[n], w) for n, w in zip(names, want))


def test_random_deep_mlp_with_a_dead_end_matches_bfs_at_depth_2000():
    depth = 2000
    g = torch.Generator().manual_seed(7)
    masks = [torch.rand(6, 6, generator=g) < 0.45 for _ in range(depth)]
    masks[1000][:, 3] = False  # unit 3 of layer 1000 leads nowhere, so its incoming weights are dead
    body = linear_chain(depth, 6)
    names = [f"{i}.weight" for i in range(depth)]
    got = effective_masks(body, dict(zip(names, masks)), (6,))
    want = bfs_linear_effective(masks, 6)
    assert not want[999][3].any()
    assert sum(int(w.sum()) for w in want) > depth  # alive, not trivially empty
    assert all(torch.equal(got[n], w) for n, w in zip(names, want))


def bfs_conv_effective(masks, shape, padding):
    """Stride-1 square convs on a (channels, h, w) input; node (l, c, y, x); weights are (out, in, k, k)."""
    _, h, w = shape
    out_edges, in_edges, uses = {}, {}, {}
    for layer, mask in enumerate(masks):
        k = mask.shape[-1]
        for o, i, ky, kx in mask.nonzero().tolist():
            for y in range(h):
                for x in range(w):
                    sy, sx = y + ky - padding, x + kx - padding
                    if 0 <= sy < h and 0 <= sx < w:
                        src, dst = (layer, i, sy, sx), (layer + 1, o, y, x)
                        out_edges.setdefault(src, []).append(dst)
                        in_edges.setdefault(dst, []).append(src)
                        uses.setdefault((layer, o, i, ky, kx), []).append((src, dst))
        assert mask.shape[-2] == k
    channels_in = masks[0].shape[1]
    starts = [(0, c, y, x) for c in range(channels_in) for y in range(h) for x in range(w)]
    from_input = _reachable(starts, lambda n: out_edges.get(n, ()))
    last = len(masks)
    ends = [(last, c, y, x) for c in range(masks[-1].shape[0]) for y in range(h) for x in range(w)]
    to_output = _reachable(ends, lambda n: in_edges.get(n, ()))
    result = []
    for layer, mask in enumerate(masks):
        eff = torch.zeros_like(mask)
        for o, i, ky, kx in mask.nonzero().tolist():
            eff[o, i, ky, kx] = any(s in from_input and d in to_output for s, d in uses.get((layer, o, i, ky, kx), ()))
        result.append(eff)
    return result


def conv_chain(depth, channels, padding):
    return nn.Sequential(*[nn.Conv2d(channels, channels, 3, padding=padding) for _ in range(depth)])


def test_random_padded_conv_net_matches_bfs():
    g = torch.Generator().manual_seed(3)
    for trial in range(6):
        depth, shape = 4, (3, 3, 4)
        masks = [torch.rand(3, 3, 3, 3, generator=g) < 0.12 + 0.05 * trial for _ in range(depth)]
        body = nn.Sequential(*[m for _ in range(depth) for m in (nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())])
        names = [f"{2 * i}.weight" for i in range(depth)]
        got = effective_masks(body, dict(zip(names, masks)), shape)
        want = bfs_conv_effective(masks, shape, padding=1)
        assert all(torch.equal(got[n], w) for n, w in zip(names, want)), trial


def test_thin_conv_chain_beside_a_dense_block_is_exact_at_depth_400():
    # a dense 4-channel block on a 2x2 map multiplies path counts by 16 per layer (16^400 ~ 1e481),
    # beside a channel that only feeds itself through the centre tap (path count 1)
    depth, channels = 400, 5
    mask = torch.zeros(channels, channels, 3, 3, dtype=torch.bool)
    mask[0, 0, 1, 1] = True
    mask[1:, 1:] = True
    masks = [mask.clone() for _ in range(depth)]
    body = conv_chain(depth, channels, padding=1)
    names = [f"{i}.weight" for i in range(depth)]
    got = effective_masks(body, dict(zip(names, masks)), (channels, 2, 2))
    assert sum(int(got[n][0, 0, 1, 1]) for n in names) == depth
    # the oracle on a shallow prefix pins the block's taps (a 2x2 map with padding 1 uses every tap)
    want = bfs_conv_effective(masks[:3], (channels, 2, 2), padding=1)
    shallow = effective_masks(conv_chain(3, channels, 1), dict(zip(names[:3], masks[:3])), (channels, 2, 2))
    assert all(torch.equal(shallow[n], w) for n, w in zip(names[:3], want))
    assert all(torch.equal(got[n], masks[0]) for n in names)  # every kept weight is on a path
