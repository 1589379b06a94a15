"""SSIM statistics and forms against scikit-image, SciPy and a direct per-patch NumPy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter
from skimage.metrics import structural_similarity

from ssim_depth_core.losses import ssim as ssim_module
from ssim_depth_core.losses.ssim import FORMS, SSIMLoss, local_statistics, ssim_components

C1, C2 = 0.01**2, 0.03**2


def _pair(shape, seed=0, dtype=torch.float64):
    """A textured image and a noisy, partly shifted copy of it, both in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator, dtype=dtype)
    y = (0.7 * x.roll(1, dims=-1) + 0.3 * torch.rand(shape, generator=generator, dtype=dtype)).clamp(0, 1)
    return x, y


def _patch_reference(x: np.ndarray, y: np.ndarray, window: int, b: int, ch: int, i: int, j: int) -> dict:
    """Statistics and every form at one pixel, computed from its reflection-padded patch with NumPy."""
    pad = window // 2
    xp = np.pad(x[b, ch], pad, mode="reflect")[i : i + window, j : j + window]
    yp = np.pad(y[b, ch], pad, mode="reflect")[i : i + window, j : j + window]
    mu_x, mu_y = xp.mean(), yp.mean()
    var_x, var_y = xp.var(), yp.var()
    cov = ((xp - mu_x) * (yp - mu_y)).mean()
    sigma_x, sigma_y = np.sqrt(var_x), np.sqrt(var_y)
    lum = (2 * mu_x * mu_y + C1) / (mu_x**2 + mu_y**2 + C1)
    con = (2 * sigma_x * sigma_y + C2) / (var_x + var_y + C2)
    struct = (cov + C2 / 2) / (sigma_x * sigma_y + C2 / 2)
    index = (2 * mu_x * mu_y + C1) * (2 * cov + C2) / ((mu_x**2 + mu_y**2 + C1) * (var_x + var_y + C2))
    return {
        "stats": (mu_x, mu_y, var_x, var_y, cov),
        "components": (lum, con, struct),
        "conventional": np.clip((1 - index) / 2, 0, 1),
        "exponent": 1 - lum**0.5 * con**2.0 * ((1 + struct) / 2) ** 1.5,
        "additive": 0.2 * (1 - lum) + 0.3 * (1 - con) + 0.5 * (1 - (1 + struct) / 2),
    }


def _losses(window: int) -> dict[str, SSIMLoss]:
    return {
        "conventional": SSIMLoss("conventional", window=window),
        "exponent": SSIMLoss("exponent", exponents=(0.5, 2.0, 1.5), window=window),
        "additive": SSIMLoss("additive", weights=(0.2, 0.3, 0.5), window=window),
    }


def test_conventional_matches_scikit_image_on_interior_pixels():
    x, y = _pair((2, 3, 17, 23))
    ours = SSIMLoss("conventional")(x, y).numpy()
    for b in range(2):
        for ch in range(3):
            _, index = structural_similarity(
                x[b, ch].numpy(),
                y[b, ch].numpy(),
                win_size=3,
                gaussian_weights=False,
                use_sample_covariance=False,
                data_range=1,
                full=True,
            )
            expected = np.clip((1 - index) / 2, 0, 1)
            # scikit-image pads with half-sample symmetry, we reflect without repeating the edge: only the
            # interior, whose windows never leave the image, is comparable.
            np.testing.assert_allclose(ours[b, ch, 1:-1, 1:-1], expected[1:-1, 1:-1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("window", [3, 5])
def test_statistics_match_scipy_mirror_filter_everywhere(window):
    x, y = _pair((1, 2, 11, 13), seed=1)
    xn, yn = x.numpy(), y.numpy()

    def mean(a):  # scipy "mirror" is reflection without repeating the edge, like ours
        return uniform_filter(a, size=(1, 1, window, window), mode="mirror")

    mu_x, mu_y = mean(xn), mean(yn)
    expected = (mu_x, mu_y, mean(xn * xn) - mu_x**2, mean(yn * yn) - mu_y**2, mean(xn * yn) - mu_x * mu_y)
    for ours, reference in zip(local_statistics(x, y, window), expected, strict=True):
        np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("window", [3, 5])
def test_components_and_forms_match_per_patch_numpy(window):
    x, y = _pair((2, 3, 9, 12), seed=2)
    xn, yn = x.numpy(), y.numpy()
    stats = [t.numpy() for t in local_statistics(x, y, window)]
    components = [t.numpy() for t in ssim_components(x, y, window)]
    maps = {form: loss(x, y).numpy() for form, loss in _losses(window).items()}
    rng = np.random.default_rng(window)
    # Random pixels plus the corners, whose windows are reflected on two sides.
    pixels = [(0, 0, 0, 0), (1, 2, 8, 11), (0, 1, 0, 11), (1, 0, 8, 0)]
    pixels += [tuple(rng.integers((2, 3, 9, 12))) for _ in range(40)]
    for b, ch, i, j in pixels:
        reference = _patch_reference(xn, yn, window, b, ch, i, j)
        np.testing.assert_allclose([s[b, ch, i, j] for s in stats], reference["stats"], rtol=0, atol=1e-12)
        np.testing.assert_allclose([c[b, ch, i, j] for c in components], reference["components"], rtol=1e-10)
        for form in FORMS:
            np.testing.assert_allclose(maps[form][b, ch, i, j], reference[form], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_float64(form):
    x, y = _pair((1, 1, 6, 7), seed=3)
    x.requires_grad_()
    y.requires_grad_()
    for window in (3, 5):
        loss = _losses(window)[form]
        assert torch.autograd.gradcheck(loss, (x, y))


def test_gradcheck_local_statistics_all_outputs():
    x, y = _pair((1, 1, 6, 7), seed=4)
    x.requires_grad_()
    y.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: local_statistics(a, b, 3), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: ssim_components(a, b, 5), (x, y))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kind", ["random", "constant"])
def test_identical_images_give_zero_loss_and_finite_gradients(form, kind):
    if kind == "random":
        target = torch.rand(2, 3, 8, 10, generator=torch.Generator().manual_seed(5))
    else:
        target = torch.full((2, 3, 8, 10), 0.37)
    pred = target.clone().requires_grad_()
    value = _losses(3)[form](pred, target)
    assert value.abs().max().item() < 1e-6
    value.sum().backward()
    assert torch.isfinite(pred.grad).all()
    # Flat patches: the contrast/structure gradients go through sigma = sqrt(var) at var == 0.
    flat = torch.full((1, 1, 6, 6), 0.5, requires_grad=True)
    other = torch.full((1, 1, 6, 6), 0.2)
    _losses(3)[form](flat, other).sum().backward()
    assert torch.isfinite(flat.grad).all()


def test_forms_differ_and_order_dissimilarity():
    x, y = _pair((1, 3, 12, 12), seed=6)
    maps = {form: SSIMLoss(form)(x, y) for form in FORMS}
    assert not torch.allclose(maps["conventional"], maps["additive"])
    for form, value in maps.items():
        # A slightly brightened x is more similar to x than the shifted, noisy y is.
        closer = SSIMLoss(form)(x, (x + 0.01).clamp(0, 1))
        assert closer.mean() < 0.1 * value.mean()


def test_batch_slicing_gives_the_same_values_and_gradients(monkeypatch):
    x, y = _pair((3, 2, 10, 9), seed=7, dtype=torch.float32)
    results = []
    for cap in (2**30, 1):  # whole batch in one slice / one image per slice
        monkeypatch.setattr(ssim_module, "_CPU_SLICE_BYTES", cap)
        pred = x.clone().requires_grad_()
        value = SSIMLoss("additive")(pred, y)
        value.pow(2).sum().backward()
        results.append((value.detach(), pred.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)


def test_half_precision_inputs_are_computed_in_float32():
    x, y = _pair((1, 3, 8, 8), seed=8, dtype=torch.float32)
    value = SSIMLoss("additive")(x.bfloat16(), y.bfloat16())
    assert value.dtype == torch.float32
    reference = SSIMLoss("additive")(x.bfloat16().float(), y.bfloat16().float())
    torch.testing.assert_close(value, reference)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="form 'multiplicative' is unknown"):
        SSIMLoss("multiplicative")
    with pytest.raises(ValueError, match="weights must be three"):
        SSIMLoss("additive", weights=(0.5, 0.5))
    with pytest.raises(ValueError, match="exponents must be three"):
        SSIMLoss("exponent", exponents=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="odd integer"):
        SSIMLoss(window=4)
    with pytest.raises(ValueError, match="equal shape"):
        SSIMLoss()(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="greater than 2"):
        SSIMLoss(window=5)(torch.rand(1, 1, 2, 8), torch.rand(1, 1, 2, 8))
