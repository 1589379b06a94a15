"""Self Query Layer depth head (SQLdepth, as SPIdepth uses it; seed 003, section 3): depth from adaptive bins.

From the encoder maps, the U-Net upsampling path (shared with the sigmoid head) and a 3x3 conv give the
per-pixel representation S (C x H x W, at the input resolution; each channel normalised over the image's
pixels). Coarse-grained queries Q_1..Q_Q (each of C values) come from patches of S: a P x P stride-P patch
embedding, a depthwise 3x3 conv over the patch grid for position, and a small transformer over the patch
tokens together with Q learned query tokens, whose outputs, projected to C, are the queries (learned tokens,
so that Q does not depend on the image size). Then

- the self-cost volume ``V[i, j, k] = Q_i . S[:, j, k]`` (Q x H x W), divided by sqrt(C) as attention
  logits are. Without the normalisation of S and this scale the dot products grew to about 2e4 in training and
  both softmaxes saturated: every pixel in one bin, a constant depth map (measured, docs/models.md). S is
  normalised per channel over the pixels, not per pixel over the channels: a per-pixel LayerNorm is blind to
  a pixel's magnitude, and one trained net whose features all pointed one way came out of it with a constant
  S and a constant map; per channel, every channel of S varies over the image by construction;
- per query, a softmax of V_i over the pixels weights S into one C-vector ("tallying" the volume); the Q
  vectors, concatenated, go through an MLP to Q positive bin widths;
- the widths, normalised to sum 1, split a range [lo, hi]: the centre of bin i is
  ``lo + (hi - lo) * (sum_{i' <= i} w_i' - w_i / 2)``;
- a plane-wise softmax over the Q planes of V gives each pixel's probabilities p_i, and its value is
  ``sum_i p_i * centre_i``.

With ``bins="depth"`` (the seed's) the range is [min_depth, max_depth] and the value is depth in metres; the
head returns it as the normalised disparity every depth net returns (``geometry.depth_to_disparity``: 0 at
max_depth, 1 at min_depth). With ``bins="disparity"`` the range is that normalised disparity, [0, 1], and the
value is returned as it is. Either way training, evaluation, the exported graph (output ``disparity``) and
every runtime treat all heads alike; ``geometry.disparity_to_depth`` gives back the depth, and
:meth:`SQLDecoder.depth` returns it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry import depth_to_disparity, disparity_to_depth
from .decoder import DECODER_CHANNELS, UpsamplingPath, conv3x3

MIN_BIN_WIDTH = 1e-3  # added to the MLP's softplus widths before normalising: no bin collapses to nothing
_MLP_WIDTH = 256


def self_cost_volume(queries: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """``V[b, i, j, k] = queries[b, i] . pixels[b, :, j, k]``.

    Args:
        queries: (B, Q, C).
        pixels: (B, C, H, W), the per-pixel representation S.

    Returns:
        (B, Q, H, W).
    """
    return (queries @ pixels.flatten(2)).unflatten(2, pixels.shape[-2:])


def tally(volume: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Per query i, ``sum_{j,k} softmax(V_i)[j, k] * S[:, j, k]``: (B, Q, H, W), (B, C, H, W) -> (B, Q, C)."""
    weights = volume.flatten(2).softmax(dim=-1)
    return weights @ pixels.flatten(2).transpose(1, 2)


def bin_centres(widths: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Centres of the bins that ``widths`` (B, Q), positive, normalised to sum 1, cut [low, high] into, in
    order: ``low + (high - low) * (cumulative width up to and including bin i - w_i / 2)``; (B, Q)."""
    normalised = widths / widths.sum(dim=-1, keepdim=True)
    count = normalised.shape[-1]
    # The cumulative sum as a product with an upper-triangular matrix of ones: a constant and a MatMul in the
    # exported graph (ONNX CumSum is left out of the TensorRT op allow-list).
    upper = torch.ones(count, count, dtype=normalised.dtype, device=normalised.device).triu()
    return low + (high - low) * (normalised @ upper - normalised / 2)


def expected_centre(volume: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Plane-wise softmax of ``volume`` (B, Q, H, W) over its Q planes, then ``sum_i p_i * centres[:, i]``
    (centres (B, Q)): the (B, 1, H, W) expected centre (depth, or disparity, as the centres are)."""
    # The planes moved last: ONNX Runtime's CPU Softmax on a non-last axis took 448 ms on a 64x192x640 volume,
    # 17 ms on the last axis (one thread); torch is no slower this way.
    probabilities = volume.permute(0, 2, 3, 1).softmax(dim=-1)  # (B, H, W, Q)
    return (probabilities @ centres[:, None, :, None]).permute(0, 3, 1, 2)


class _TransformerLayer(nn.Module):
    """Pre-norm transformer encoder layer: multi-head self-attention, then a ReLU MLP (4x wide), residuals.

    Attention is written out (MatMul, Softmax over the last axis) so that it exports to plain ONNX ops.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.ReLU(inplace=True), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        head_width = width // self.heads
        qkv = self.qkv(self.norm1(x)).reshape(batch, tokens, 3, self.heads, head_width).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_width)
        attention = ((q * head_width**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = x + self.proj((attention @ v).transpose(1, 2).reshape(batch, tokens, width))
        return x + self.mlp(self.norm2(x))


class SQLDecoder(UpsamplingPath):
    """Self Query Layer head over five encoder maps (1/2 .. 1/32): full-resolution disparity from depth bins.

    Args:
        num_ch_enc: channels of the five encoder maps.
        min_depth, max_depth: the depth range the bins divide, metres.
        padding_mode: the upsampling path's and S's conv padding, "reflection" or "zeros".
        queries: Q, the number of queries and of depth bins.
        dim: C, the channels of S and of each query.
        patch_size: P, the side of the patches the query transformer sees, pixels.
        embed_dim: the transformer's width (a multiple of ``heads``).
        layers, heads: transformer depth and attention heads.
        bins: "disparity" (bins over the normalised disparity [0, 1]: the untrained head, p uniform, starts
            at 0.5 as the unet's sigmoid does) or "depth" (over [min_depth, max_depth] in metres, the
            seed's; it did not train on the CPU recipe, docs/models.md).
    """

    def __init__(
        self,
        num_ch_enc: Sequence[int],
        min_depth: float,
        max_depth: float,
        padding_mode: str = "reflection",
        queries: int = 64,
        dim: int = 32,
        patch_size: int = 16,
        embed_dim: int = 128,
        layers: int = 4,
        heads: int = 4,
        bins: str = "disparity",
    ) -> None:
        super().__init__(num_ch_enc, padding_mode)
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth} and {max_depth}")
        for name, value in (
            ("queries", queries),
            ("dim", dim),
            ("patch_size", patch_size),
            ("embed_dim", embed_dim),
            ("layers", layers),
            ("heads", heads),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model.sql.{name} must be an integer >= 1, got {value!r}")
        if embed_dim % heads:
            raise ValueError(f"model.sql.embed_dim {embed_dim} must be a multiple of model.sql.heads {heads}")
        if bins not in ("depth", "disparity"):
            raise ValueError(f"model.sql.bins must be 'depth' or 'disparity', got {bins!r}")
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.bins_in_depth = bins == "depth"
        self.num_queries = queries
        self.pixels = conv3x3(DECODER_CHANNELS[0], dim, padding_mode)  # S, before its normalisation
        self.patch_embedding = nn.Conv2d(dim, embed_dim, patch_size, stride=patch_size)
        self.position = nn.Conv2d(embed_dim, embed_dim, 3, padding=1, groups=embed_dim)
        self.query_tokens = nn.Parameter(torch.empty(queries, embed_dim))
        # Unit-scale tokens, so that each query's residual stream keeps its own token beside the attention
        # output that all of them share. At std 0.02 the untrained queries were nearly identical, and the
        # gradient reaching S, sum_i p_i (centre_i - value) Q_i, is zero for equal queries: S never learnt
        # spatial structure and every trained net output one constant map (docs/models.md).
        nn.init.normal_(self.query_tokens)
        self.transformer = nn.Sequential(*(_TransformerLayer(embed_dim, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(embed_dim)
        self.to_queries = nn.Linear(embed_dim, dim)
        self.bin_mlp = nn.Sequential(
            nn.Linear(queries * dim, _MLP_WIDTH),
            nn.LeakyReLU(),
            nn.Linear(_MLP_WIDTH, _MLP_WIDTH),
            nn.LeakyReLU(),
            nn.Linear(_MLP_WIDTH, queries),
        )

    def representation(self, full_resolution: torch.Tensor) -> torch.Tensor:
        """S from the upsampling path's full-resolution level: a 3x3 conv, then each of the C channels
        normalised to zero mean and unit variance over the image's pixels; (B, 16, H, W) -> (B, C, H, W)."""
        return F.instance_norm(self.pixels(full_resolution))

    def queries(self, pixels: torch.Tensor) -> torch.Tensor:
        """The coarse-grained queries of a per-pixel representation: (B, C, H, W) -> (B, Q, C)."""
        patches = self.patch_embedding(pixels)
        patches = patches + self.position(patches)
        tokens = patches.flatten(2).transpose(1, 2)  # (B, patches, embed_dim)
        learned = self.query_tokens.expand(pixels.shape[0], -1, -1)
        x = self.norm(self.transformer(torch.cat([learned, tokens], dim=1)))
        return self.to_queries(x[:, : self.num_queries])

    def bin_range(self) -> tuple[float, float]:
        """The range the bins split: [min_depth, max_depth] in metres, or the normalised disparity [0, 1]."""
        return (self.min_depth, self.max_depth) if self.bins_in_depth else (0.0, 1.0)

    def bins(self, volume: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Bin centres (B, Q) within :meth:`bin_range` (metres, or normalised disparity), regressed from the
        tallied volume."""
        widths = F.softplus(self.bin_mlp(tally(volume, pixels).flatten(1))) + MIN_BIN_WIDTH
        return bin_centres(widths.float(), *self.bin_range())

    def expected_bin_value(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, 1, H, W): each pixel's expectation of the bin centres, from the five encoder maps."""
        *_, (_, full_resolution) = self.levels(features)  # the last level is at the input resolution
        pixels = self.representation(full_resolution)
        volume = self_cost_volume(self.queries(pixels), pixels) * pixels.shape[1] ** -0.5
        return expected_centre(volume.float(), self.bins(volume, pixels))

    def depth(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, 1, H, W) depth in metres, within [min_depth, max_depth], from the five encoder maps."""
        value = self.expected_bin_value(features)
        return value if self.bins_in_depth else disparity_to_depth(value, self.min_depth, self.max_depth)[1]

    def forward(
        self, features: Sequence[torch.Tensor], scales: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """The full-resolution normalised disparity, as ``[(B, 1, H, W)]`` in [0, 1] (the decoders' contract;
        ``scales``, when given, must be (0,): this head has no other scale)."""
        if scales is not None and tuple(scales) != (0,):
            raise ValueError(f"the sql decoder predicts scale 0 only, asked for scales {list(scales)}")
        value = self.expected_bin_value(features)
        return [depth_to_disparity(value, self.min_depth, self.max_depth) if self.bins_in_depth else value]
