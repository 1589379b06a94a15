"""The Self Query Layer head (models/sql.py) against a hand-computed case: self-cost volume, tallying, bin
centres, plane-wise softmax and depth; then the head as a whole: its depth range, the disparity it returns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssim_depth_core.geometry import disparity_to_depth
from ssim_depth_core.models.sql import (
    MIN_BIN_WIDTH,
    SQLDecoder,
    bin_centres,
    expected_centre,
    self_cost_volume,
    tally,
)

E = math.e
# Two queries of C = 2 values and a 1x2 representation S: pixel (0, 0) is (2, 0), pixel (0, 1) is (0, 1).
QUERIES = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (B=1, Q=2, C=2)
PIXELS = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (B=1, C=2, H=1, W=2)


def test_self_cost_volume_is_query_dot_pixel():
    volume = self_cost_volume(QUERIES, PIXELS)
    # V[i, j, k] = Q_i . S[:, j, k]: query 0 reads channel 0, query 1 channel 1
    expected = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])
    torch.testing.assert_close(volume, expected)


def test_tally_weights_the_pixels_by_each_querys_softmax_over_them():
    volume = self_cost_volume(QUERIES, PIXELS)
    # query 0: softmax([2, 0]) = (e^2, 1) / (e^2 + 1); query 1: softmax([0, 1]) = (1, e) / (1 + e)
    a, b = E**2 / (E**2 + 1), 1 / (E**2 + 1)
    c, d = 1 / (1 + E), E / (1 + E)
    expected = torch.tensor([[[2 * a, b], [2 * c, d]]])  # sum_jk w_jk S_jk with S = (2, 0), (0, 1)
    torch.testing.assert_close(tally(volume, PIXELS), expected)


def test_bin_centres_split_the_range_by_the_normalised_cumulative_widths():
    # widths 1 and 3 -> 1/4 and 3/4 of [1, 9] m: bins [1, 3] and [3, 9], centres 2 and 6
    centres = bin_centres(torch.tensor([[1.0, 3.0]]), 1.0, 9.0)
    torch.testing.assert_close(centres, torch.tensor([[2.0, 6.0]]))
    # three equal bins of [0.5, 80]: centres at 1/6, 1/2, 5/6 of the range
    centres = bin_centres(torch.tensor([[0.2, 0.2, 0.2], [5.0, 5.0, 5.0]]), 0.5, 80.0)
    expected = torch.tensor([0.5 + 79.5 * f for f in (1 / 6, 1 / 2, 5 / 6)])
    torch.testing.assert_close(centres, torch.stack([expected, expected]))


def test_depth_is_the_plane_wise_softmax_expectation_of_the_centres():
    volume = self_cost_volume(QUERIES, PIXELS)  # pixel (0, 0): (2, 0); pixel (0, 1): (0, 1) over the planes
    centres = bin_centres(torch.tensor([[1.0, 3.0]]), 1.0, 9.0)  # 2 m and 6 m
    depth = expected_centre(volume, centres)
    first = (E**2 * 2 + 1 * 6) / (E**2 + 1)  # p = (e^2, 1) / (e^2 + 1)
    second = (1 * 2 + E * 6) / (1 + E)  # p = (1, e) / (1 + e)
    assert depth.shape == (1, 1, 1, 2)
    torch.testing.assert_close(depth, torch.tensor([[[[first, second]]]]))
    assert first == pytest.approx(2.4768116, abs=1e-6) and second == pytest.approx(4.9242343, abs=1e-6)


def _features(batch: int = 2, size: int = 64) -> list[torch.Tensor]:
    """Random maps shaped like a ResNet-18's five (1/2 .. 1/32) for a size x size input."""
    channels = (64, 64, 128, 256, 512)
    return [torch.rand(batch, c, size // 2 ** (i + 1), size // 2 ** (i + 1)) for i, c in enumerate(channels)]


def sharpen(head: SQLDecoder) -> SQLDecoder:
    """Scale up S and the queries so that the untrained head's volume is peaky and its depths spread over
    the range (fresh, they sit near the mean bin centre)."""
    torch.nn.init.normal_(head.pixels.weight, std=2.0)
    torch.nn.init.normal_(head.to_queries.weight, std=3.0)
    return head


def test_head_outputs_the_normalised_disparity_of_its_bins_depth():
    torch.manual_seed(0)
    head = SQLDecoder(
        (64, 64, 128, 256, 512), 0.5, 80.0, queries=8, dim=4, patch_size=16, embed_dim=16, bins="depth"
    )
    sharpen(head)
    features = _features()
    with torch.no_grad():
        depth = head.depth(features)
        (disparity,) = head(features)
    assert depth.shape == disparity.shape == (2, 1, 64, 64)
    assert depth.min() >= 0.5 and depth.max() <= 80.0 and depth.std() > 1.0
    assert disparity.min() >= 0 and disparity.max() <= 1
    # the serving formula gives back the bins' depth
    torch.testing.assert_close(disparity_to_depth(disparity, 0.5, 80.0)[1], depth, rtol=1e-5, atol=0)


def test_head_composes_the_documented_steps():
    torch.manual_seed(1)
    head = SQLDecoder(
        (64, 64, 128, 256, 512), 0.5, 80.0, queries=4, dim=3, patch_size=8, embed_dim=8, heads=2, bins="depth"
    )
    features = _features(batch=1, size=64)
    with torch.no_grad():
        *_, (_, full_resolution) = head.levels(features)
        pixels = head.representation(full_resolution)
        queries = head.queries(pixels)
        volume = self_cost_volume(queries, pixels) / math.sqrt(3)
        widths = torch.nn.functional.softplus(head.bin_mlp(tally(volume, pixels).flatten(1))) + MIN_BIN_WIDTH
        expected = expected_centre(volume, bin_centres(widths, 0.5, 80.0))
        torch.testing.assert_close(head.depth(features), expected)
    assert queries.shape == (1, 4, 3) and volume.shape == (1, 4, 64, 64)


@pytest.mark.parametrize(
    ("bins", "disparity", "depth"),
    [
        ("depth", (1 / 40.25 - 1 / 80) / (2 - 1 / 80), 40.25),  # the middle of [0.5, 80] m
        ("disparity", 0.5, 1 / (1 / 80 + (2 - 1 / 80) * 0.5)),  # the middle of [1/80, 1/0.5] 1/m
    ],
)
def test_uniform_probabilities_and_equal_bins_give_the_middle_of_the_bin_range(bins, disparity, depth):
    head = SQLDecoder((64, 64, 128, 256, 512), 0.5, 80.0, queries=4, dim=3, embed_dim=8, layers=1, bins=bins)
    with torch.no_grad():  # zero queries: V = 0, p uniform; a zero last MLP layer: equal widths
        for parameter in (*head.to_queries.parameters(), *head.bin_mlp[-1].parameters()):
            parameter.zero_()
        features = _features(batch=1)
        (output,) = head(features)
        torch.testing.assert_close(output, torch.full((1, 1, 64, 64), disparity))
        torch.testing.assert_close(head.depth(features), torch.full((1, 1, 64, 64), depth))
    with pytest.raises(ValueError, match="model.sql.bins must be 'depth' or 'disparity', got 'log'"):
        SQLDecoder((64, 64, 128, 256, 512), 0.5, 80.0, bins="log")


def test_untrained_queries_differ_from_each_other():
    """S only gets a gradient through the differences between the queries (sum_i p_i (c_i - d) Q_i vanishes
    for equal Q_i): fresh queries must not start out nearly parallel."""
    torch.manual_seed(3)
    head = SQLDecoder((64, 64, 128, 256, 512), 0.1, 100.0)
    with torch.no_grad():
        *_, (_, full_resolution) = head.levels(_features(batch=1, size=64))
        queries = head.queries(head.representation(full_resolution))[0]  # (Q, C)
    unit = torch.nn.functional.normalize(queries, dim=-1)
    cosine = unit @ unit.T
    off_diagonal = cosine[~torch.eye(len(cosine), dtype=torch.bool)]
    assert off_diagonal.mean() < 0.5  # 0.98 with the former std-0.02 tokens


def test_representation_is_normalised_per_channel_over_the_pixels():
    torch.manual_seed(2)
    head = SQLDecoder((64, 64, 128, 256, 512), 0.5, 80.0, queries=2, dim=6, embed_dim=8, layers=1)
    torch.nn.init.normal_(head.pixels.weight, std=50.0)  # large raw activations: the norm undoes them
    with torch.no_grad():
        *_, (_, full_resolution) = head.levels(_features(batch=2, size=64))
        pixels = head.representation(full_resolution)
    assert pixels.shape == (2, 6, 64, 64)
    torch.testing.assert_close(pixels.mean(dim=(2, 3)), torch.zeros(2, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels.var(dim=(2, 3), unbiased=False), torch.ones(2, 6), atol=1e-3, rtol=0)


def test_representation_keeps_pixels_that_differ_only_in_magnitude_apart():
    """The trained net that still collapsed: every pixel's conv output one direction v times its own magnitude
    a, plus an offset. A per-pixel norm over the channels maps all such pixels to one vector; here channel c
    of S must be sign(v_c) times a standardised over the pixels (hand-computed with NumPy)."""
    head = SQLDecoder((64, 64, 128, 256, 512), 0.5, 80.0, queries=2, dim=4, embed_dim=8, layers=1)
    direction = torch.tensor([3.0, -0.5, 1.0, -2.0])
    magnitude = torch.rand(1, 1, 8, 12, generator=torch.Generator().manual_seed(4)) * 10 + 20
    with torch.no_grad():
        head.pixels.weight.zero_()
        head.pixels.weight[:, 0, 1, 1] = direction  # centre tap of input channel 0 only
        head.pixels.bias.copy_(torch.tensor([5.0, 7.0, -3.0, 1.0]))
        full_resolution = torch.cat([magnitude, torch.randn(1, 15, 8, 12)], dim=1)
        pixels = head.representation(full_resolution)[0].numpy()
    a = magnitude[0, 0].numpy().astype(np.float64)
    standardised = (a - a.mean()) / a.std()
    for channel, sign in enumerate(np.sign(direction.numpy())):
        np.testing.assert_allclose(pixels[channel], sign * standardised, atol=1e-3)


def test_head_has_one_scale_and_checks_its_settings():
    head = SQLDecoder((64, 64, 128, 256, 512), 0.5, 80.0, queries=2, dim=2, embed_dim=8, layers=1)
    with pytest.raises(ValueError, match=r"scale 0 only.*\[0, 1\]"):
        head(_features(batch=1), scales=(0, 1))
    with pytest.raises(ValueError, match="embed_dim 10 must be a multiple of model.sql.heads 4"):
        SQLDecoder((64, 64, 128, 256, 512), 0.5, 80.0, embed_dim=10)
    with pytest.raises(ValueError, match="model.sql.queries must be an integer >= 1, got 0"):
        SQLDecoder((64, 64, 128, 256, 512), 0.5, 80.0, queries=0)
    with pytest.raises(ValueError, match="0 < min_depth < max_depth"):
        SQLDecoder((64, 64, 128, 256, 512), 80.0, 0.5)
