"""``GatherROIPooler``: Detectron2's ``ROIPooler`` (ROIAlign / ROIAlignV2) as one weighted gather.

torchvision's CPU ``roi_align`` backward is a single-threaded scatter that recomputes the bilinear
weights for every channel; with Detectron2's 512 sampled RoIs per image it was the largest op of
the CPU training step after the convolutions and matrix products. ROIAlign is a fixed linear map
from feature pixels to RoI bins, and its weights are separable: every sample point's bilinear
weight is (weight along y) x (weight along x), and averaging over a bin's sample grid keeps that
product form. So the (bins x pixels) operator of all RoIs and all FPN levels is built once per
call, with vectorised torch ops, and forward and backward are both weighted row gathers
(``F.embedding_bag``) over channels-last features. The result is ROIAlign's up to float
rounding; only CPU float tensors take this path (CUDA keeps Detectron2's kernels).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from detectron2.layers import cat
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.structures import Boxes
from torch.autograd.function import once_differentiable


def _axis_weights(
    start: torch.Tensor, length: torch.Tensor, grid: torch.Tensor, size: torch.Tensor, pooled: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ROIAlign's weights along one axis, per (RoI, bin), as a window of consecutive pixels.

    ``start``/``length`` (R,) float: the RoI's start and extent in feature pixels; ``grid`` (R,)
    long: samples per bin; ``size`` (R,) long: the feature map's extent. Returns ``lo`` (R, P)
    long, the window's first pixel; ``n`` (R, P) long, its length; ``w`` (R, P, K) the weight of
    pixel ``lo + k`` (each sample's bilinear weight divided by ``grid``), zero past ``n``.
    """
    dtype = start.dtype
    num = start.shape[0]
    bin_size = length / pooled
    steps = max(int(grid.max()), 1) if num else 1
    p = torch.arange(pooled, dtype=dtype, device=start.device)
    i = torch.arange(steps, dtype=dtype, device=start.device)
    g = grid.clamp(min=1).to(dtype)[:, None, None]
    # Sample coordinates (R, P, G), in torchvision's order of operations.
    pos = (start[:, None, None] + p[:, None] * bin_size[:, None, None]) + (
        (i + 0.5) * bin_size[:, None, None]
    ) / g
    sizef = size.to(dtype)[:, None, None]
    valid = (i < grid[:, None, None]) & (pos >= -1.0) & (pos <= sizef)
    pos = pos.clamp(min=0.0)
    low = pos.long()
    top = low >= size[:, None, None] - 1
    low = torch.where(top, size[:, None, None] - 1, low)
    high = torch.where(top, low, low + 1)
    frac = torch.where(top, torch.zeros_like(pos), pos - low.to(dtype))
    scale = valid.to(dtype) / g
    lo = torch.where(valid, low, torch.full_like(low, torch.iinfo(torch.int64).max)).amin(dim=2)
    hi = torch.where(valid, high, torch.full_like(high, -1)).amax(dim=2)
    n = (hi - lo + 1).clamp(min=0)
    lo = torch.where(n > 0, lo, torch.zeros_like(lo))
    k = max(int(n.max()), 1) if num else 1
    w = torch.zeros((num, pooled, k), dtype=dtype, device=start.device)
    w.scatter_add_(2, (low - lo[..., None]).clamp(0, k - 1), (1.0 - frac) * scale)
    w.scatter_add_(2, (high - lo[..., None]).clamp(0, k - 1), frac * scale)
    return lo, n, w


def roi_align_operator(
    boxes: torch.Tensor,
    spatial_scale: torch.Tensor,
    heights: torch.Tensor,
    widths: torch.Tensor,
    base: torch.Tensor,
    output_size: int,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sparse (R * S * S bins) x (pixels) operator of torchvision's ``roi_align``.

    ``boxes`` (R, 4) XYXY in image coordinates; per RoI: ``spatial_scale`` (R,) float,
    the feature map's ``heights``/``widths`` (R,) long and ``base`` (R,) long, the row of its
    (image, y=0, x=0) pixel in a channels-last pixel table whose rows run y-major. Returns
    ``(index, offsets, weights)`` in ``F.embedding_bag``'s format: bin b (ordered RoI, y, x)
    sums ``weights[j] * table[index[j]]`` for j in ``offsets[b]`` .. ``offsets[b + 1]``.
    """
    s = output_size
    num = boxes.shape[0]
    offset = 0.5 if aligned else 0.0
    x0 = boxes[:, 0] * spatial_scale - offset
    y0 = boxes[:, 1] * spatial_scale - offset
    rw = boxes[:, 2] * spatial_scale - offset - x0
    rh = boxes[:, 3] * spatial_scale - offset - y0
    if not aligned:  # legacy ROIAlign: RoIs at least 1x1
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    if sampling_ratio > 0:
        gw = gh = torch.full((num,), sampling_ratio, dtype=torch.int64, device=boxes.device)
    else:
        gw, gh = torch.ceil(rw / s).long(), torch.ceil(rh / s).long()
    ylo, ny, wy = _axis_weights(y0, rh, gh, heights, s)
    xlo, nx, wx = _axis_weights(x0, rw, gw, widths, s)

    # Bin (r, py, px) gathers the ny[r, py] x nx[r, px] window, row-major: expanded first to
    # its window rows, then each row to its pixels.
    arange = functools.partial(torch.arange, device=boxes.device)

    def take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return values.reshape(-1).index_select(0, index)

    flat_rp = arange(num * s)  # flat (r, p) of ylo, ny, wy / xlo, nx, wx
    bin_py = flat_rp.repeat_interleave(s)
    bin_px = flat_rp.view(num, 1, s).expand(num, s, s).reshape(-1)
    bin_r = arange(num).repeat_interleave(s * s)
    ny_bin, nx_bin = take(ny, bin_py), take(nx, bin_px)
    counts = ny_bin * nx_bin
    offsets = torch.cumsum(counts, 0) - counts
    width = take(widths, bin_r)
    bin_start = take(base, bin_r) + take(ylo, bin_py) * width + take(xlo, bin_px)

    rows = int(ny_bin.sum()) if num else 0
    row_bin = torch.repeat_interleave(arange(num * s * s), ny_bin, output_size=rows)
    dy = arange(rows) - take(torch.cumsum(ny_bin, 0) - ny_bin, row_bin)
    row_start = take(bin_start, row_bin) + dy * take(width, row_bin)
    row_weight = take(wy, take(bin_py, row_bin) * wy.shape[2] + dy)
    row_nx = take(nx_bin, row_bin)
    row_wx = take(bin_px, row_bin) * wx.shape[2]

    total = int(row_nx.sum()) if rows else 0
    entry_row = torch.repeat_interleave(arange(rows), row_nx, output_size=total)
    dx = arange(total) - take(torch.cumsum(row_nx, 0) - row_nx, entry_row)
    index = take(row_start, entry_row) + dx
    weights = take(row_weight, entry_row) * take(wx, take(row_wx, entry_row) + dx)
    return index, offsets, weights


class _WeightedGather(torch.autograd.Function):
    """``out[b] = sum_j weights[j] * table[index[j]]`` over bag b's entries; the backward is
    the same gather on the transposed operator (entries regrouped by table row)."""

    @staticmethod
    def forward(ctx, table, index, offsets, weights):
        ctx.save_for_backward(index, offsets, weights)
        ctx.num_rows = table.shape[0]
        return F.embedding_bag(index, table, offsets, mode="sum", per_sample_weights=weights)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        index, offsets, weights = ctx.saved_tensors
        # int32 keys sort about twice as fast; table rows are far below 2**31.
        order = torch.argsort(index.to(torch.int32), stable=True)
        counts = torch.bincount(index, minlength=ctx.num_rows)
        bag_of_entry = torch.repeat_interleave(
            torch.arange(len(offsets), device=index.device),
            torch.diff(offsets, append=offsets.new_tensor([len(index)])),
            output_size=len(index),
        )
        grad_table = F.embedding_bag(
            bag_of_entry.index_select(0, order),
            grad.contiguous(),
            torch.cumsum(counts, 0) - counts,
            mode="sum",
            per_sample_weights=weights.index_select(0, order),
        )
        return grad_table, None, None, None


class GatherROIPooler(ROIPooler):
    """A drop-in ``ROIPooler`` whose ROIAlign / ROIAlignV2 pooling of CPU float features is a
    weighted gather (see the module docstring); same arguments, same output (M, C, S, S), given
    as a channels-last strided view (the energy head's convolutions run faster on it).

    Other pooler types and non-CPU features use ``ROIPooler.forward`` unchanged.
    """

    def __init__(self, output_size, scales, sampling_ratio, pooler_type, **kwargs):
        super().__init__(output_size, scales, sampling_ratio, pooler_type, **kwargs)
        self.pooler_type = pooler_type
        self.scales = tuple(float(s) for s in scales)
        self.sampling_ratio = int(sampling_ratio)

    def _gather_path(self, x: list[torch.Tensor]) -> bool:
        return (
            self.pooler_type in ("ROIAlign", "ROIAlignV2")
            and self.output_size[0] == self.output_size[1]
            and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in x)
        )

    def forward(self, x: list[torch.Tensor], box_lists: list[Boxes]) -> torch.Tensor:
        if not self._gather_path(x):
            return super().forward(x, box_lists)
        if len(x) != len(self.level_poolers):
            raise ValueError(f"GatherROIPooler expects {len(self.level_poolers)} levels, got {len(x)}")
        if len(box_lists) != x[0].shape[0]:
            raise ValueError(f"{len(box_lists)} box lists for a batch of {x[0].shape[0]} images")
        device, dtype = x[0].device, x[0].dtype
        s = self.output_size[0]
        channels = x[0].shape[1]

        boxes = cat([b.tensor for b in box_lists]).to(dtype)
        image = torch.repeat_interleave(
            torch.arange(len(box_lists), device=device),
            torch.tensor([len(b) for b in box_lists], device=device),
        )
        if len(x) > 1:
            level = assign_boxes_to_levels(
                box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
            )
        else:
            level = torch.zeros(len(boxes), dtype=torch.int64, device=device)
        # One channels-last table of every level's pixels: rows (level, image, y, x).
        sizes = [t.shape[0] * t.shape[2] * t.shape[3] for t in x]
        starts = torch.tensor([0, *sizes[:-1]], device=device).cumsum(0)
        heights = torch.tensor([t.shape[2] for t in x], device=device)
        widths = torch.tensor([t.shape[3] for t in x], device=device)
        scales = torch.tensor(self.scales, dtype=dtype, device=device)
        table = cat([t.permute(0, 2, 3, 1).reshape(-1, channels) for t in x])

        h, w = heights[level], widths[level]
        index, offsets, weights = roi_align_operator(
            boxes,
            scales[level],
            h,
            w,
            starts[level] + image * h * w,
            s,
            self.sampling_ratio,
            aligned=self.pooler_type == "ROIAlignV2",
        )
        out = _WeightedGather.apply(table, index, offsets, weights)
        return out.reshape(len(boxes), s, s, channels).permute(0, 3, 1, 2)
