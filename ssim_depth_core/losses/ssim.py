"""SSIM-family dissimilarity maps computed from one fused pass of local statistics.

The local means, variances and covariance of two images over a ``window x window`` box (reflection padded,
so maps keep the input size) come from one box-filter pass over the five moments x, y, x*x, y*y, x*y
stacked together. Every form is built from those statistics:

- ``conventional``: ``clamp((1 - SSIM) / 2, 0, 1)`` with the usual single-scale SSIM index
  ``SSIM = (2 mu_x mu_y + C1)(2 cov_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2))``;
- ``exponent``: ``1 - l^a * c^b * ((1 + s) / 2)^g`` (luminance, contrast, structure with separate exponents);
- ``additive``: ``w_l (1 - l) + w_c (1 - c) + w_s (1 - (1 + s) / 2)`` (the additive SSIM variant).

:class:`SSIMLoss` evaluates a form and its derivatives with respect to the five statistics in the same pass
(an autograd function with an analytic backward), one cache-sized batch slice at a time on CPU, so it neither
keeps dozens of image-sized autograd temporaries nor re-reads them from memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

FORMS = ("conventional", "exponent", "additive")
C1 = 0.01**2
C2 = 0.03**2
# Variances are floored here before sigma_x * sigma_y = sqrt(var_x var_y): sqrt has an infinite slope at 0,
# and flat patches (var == 0) are common. The floor is far below the float32 resolution of E[x^2] - mu^2.
_FLAT_VARIANCE = 1e-12
# Floor of the bases of the exponent form, so x^p keeps a finite gradient for p < 1 (and stays real for
# signed inputs). Images in [0, 1] give l, c >= ~1e-4, so only a perfectly anti-correlated structure hits it.
_POW_FLOOR = 1e-6
# On CPU the work runs over batch slices whose five stacked moments take at most this many bytes: image-sized
# temporaries come from fresh (page-faulting) memory and fall out of cache, costing more than the arithmetic.
_CPU_SLICE_BYTES = 8 * 2**20

Stats = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def local_statistics(x: torch.Tensor, y: torch.Tensor, window: int = 3) -> Stats:
    """Local means, variances and covariance of ``x`` and ``y`` over a box window (differentiable).

    Population statistics of each reflection-padded ``window x window`` neighbourhood: window means of the
    moments, ``var = E[x^2] - mu^2``, ``cov = E[xy] - mu_x mu_y``. Half-precision inputs are computed in
    float32, where that difference does not cancel away.

    Args:
        x, y: (B, C, H, W) images of equal shape, H and W greater than ``window // 2``.
        window: odd box size (>= 3).

    Returns:
        ``(mu_x, mu_y, var_x, var_y, cov_xy)``, each (B, C, H, W).
    """
    x, y = _prepare(x, y, window)
    return _LocalStatistics.apply(x, y, window)


def ssim_components(
    x: torch.Tensor, y: torch.Tensor, window: int = 3, c1: float = C1, c2: float = C2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Luminance, contrast and structure comparisons of SSIM (differentiable).

    ``l = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)``,
    ``c = (2 sigma_x sigma_y + C2) / (var_x + var_y + C2)``,
    ``s = (cov_xy + C3) / (sigma_x sigma_y + C3)`` with ``C3 = C2 / 2`` and ``sigma = sqrt(var)``, the
    variances floored at 1e-12 so that gradients stay finite on flat patches.

    Args:
        x, y: (B, C, H, W) images (in [0, 1] for the default constants).
        window: odd box size of the local statistics.
        c1, c2: stabilising constants ``(K1 L)^2``, ``(K2 L)^2`` for data range L = 1.

    Returns:
        ``(l, c, s)``, each (B, C, H, W).
    """
    mu_x, mu_y, var_x, var_y, cov = local_statistics(x, y, window)
    lum, _ = _luminance(mu_x, mu_y, c1)
    con, struct, _ = _contrast_structure(var_x, var_y, cov, c2)
    return lum, con, struct


class SSIMLoss(nn.Module):
    """Per-pixel SSIM dissimilarity in one of three forms (see the module docstring).

    Args:
        form: ``"conventional"``, ``"exponent"`` or ``"additive"``.
        weights: ``(w_l, w_c, w_s)`` of the additive form.
        exponents: ``(a, b, g)`` of the exponent form; bases are floored at 1e-6 before the power.
        window: odd box size of the local statistics.
        c1, c2: SSIM stabilising constants.

    The defaults (equal weights, unit exponents) are placeholders: the paper introducing the additive form
    does not publish its values, so the best ones are to be found by our own study.

    ``forward(x, y)`` takes two (B, C, H, W) images and returns the (B, C, H, W) dissimilarity map, 0 where
    the images agree locally. Gradients are finite everywhere, flat patches included.
    """

    def __init__(
        self,
        form: str = "conventional",
        weights: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
        exponents: Sequence[float] = (1.0, 1.0, 1.0),
        window: int = 3,
        c1: float = C1,
        c2: float = C2,
    ) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"SSIM form '{form}' is unknown; expected one of {', '.join(FORMS)}")
        _check_window(window)
        self.form = form
        self.weights = _three_non_negative("weights", weights)
        self.exponents = _three_non_negative("exponents", exponents)
        self.window = window
        self.c1 = c1
        self.c2 = c2

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = _prepare(x, y, self.window)
        return _FusedSSIM.apply(x, y, self)

    def evaluate(self, stats: Stats, partials: bool) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """The form's map from ``(mu_x, mu_y, var_x, var_y, cov)`` and, if asked, its derivatives by each."""
        if self.form == "conventional":
            return _conventional(stats, self.c1, self.c2, partials)
        if self.form == "exponent":
            return _exponent(stats, self.exponents, self.c1, self.c2, partials)
        return _additive(stats, self.weights, self.c1, self.c2, partials)

    def extra_repr(self) -> str:
        detail = {"exponent": f", exponents={self.exponents}", "additive": f", weights={self.weights}"}
        return f"form={self.form!r}, window={self.window}" + detail.get(self.form, "")


# Forms: each returns the map and, when asked, its partial derivatives by (mu_x, mu_y, var_x, var_y, cov).


def _conventional(stats: Stats, c1: float, c2: float, partials: bool):
    mu_x, mu_y, var_x, var_y, cov = stats
    lum, lum_den = _luminance(mu_x, mu_y, c1)
    cs_den = var_x + var_y + c2
    cs = (2 * cov + c2) / cs_den  # contrast * structure without sigmas (C3 = C2 / 2)
    index = lum * cs
    value = ((1 - index) / 2).clamp(0, 1)
    if not partials:
        return value, None
    # d value / d index: -1/2 inside the clamp, bounds included as in torch.clamp.
    slope = ((index >= -1) & (index <= 1)).to(index.dtype).mul_(-0.5)
    d_mu_x, d_mu_y = _luminance_partials(slope * cs, mu_x, mu_y, lum, lum_den)
    k = slope / cs_den
    d_var = -k * index
    return value, [d_mu_x, d_mu_y, d_var, d_var, 2 * k * lum]


def _additive(stats: Stats, weights: tuple[float, float, float], c1: float, c2: float, partials: bool):
    w_l, w_c, w_s = weights
    lum, lum_den = _luminance(stats[0], stats[1], c1)
    con, struct, aux = _contrast_structure(*stats[2:], c2)
    value = (w_l + w_c + w_s) - (w_l * lum + w_c * con + (w_s / 2) * (1 + struct))
    if not partials:
        return value, None
    return value, _chain_components(-w_l, -w_c, -w_s / 2, stats, lum, lum_den, con, struct, aux)


def _exponent(stats: Stats, exponents: tuple[float, float, float], c1: float, c2: float, partials: bool):
    lum, lum_den = _luminance(stats[0], stats[1], c1)
    con, struct, aux = _contrast_structure(*stats[2:], c2)
    terms = (lum, con, (1 + struct) / 2)
    bases = [t.clamp(min=_POW_FLOOR) for t in terms]
    product = math.prod(base.pow(p) for base, p in zip(bases, exponents, strict=True))
    value = 1 - product
    if not partials:
        return value, None
    # d value / d term = -p * product / base, zero where the floor is active.
    k_l, k_c, k_m = (
        torch.where(t >= _POW_FLOOR, (-p) * product / base, 0.0)
        for t, base, p in zip(terms, bases, exponents, strict=True)
    )
    return value, _chain_components(k_l, k_c, k_m / 2, stats, lum, lum_den, con, struct, aux)


def _luminance(mu_x: torch.Tensor, mu_y: torch.Tensor, c1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """l and its denominator."""
    den = mu_x.square() + mu_y.square() + c1
    return (2 * mu_x * mu_y + c1) / den, den


def _luminance_partials(k_l, mu_x, mu_y, lum, den) -> tuple[torch.Tensor, torch.Tensor]:
    """``k_l * dl/dmu_x``, ``k_l * dl/dmu_y``."""
    scale = 2 * k_l / den
    return scale * (mu_y - mu_x * lum), scale * (mu_x - mu_y * lum)


def _contrast_structure(var_x: torch.Tensor, var_y: torch.Tensor, cov: torch.Tensor, c2: float):
    """c, s and what their partials need: floored variances, sigma_x sigma_y and the denominators."""
    var_x = var_x.clamp(min=_FLAT_VARIANCE)
    var_y = var_y.clamp(min=_FLAT_VARIANCE)
    sigma_xy = (var_x * var_y).sqrt()
    den = var_x + var_y + c2
    s_den = sigma_xy + c2 / 2
    con = (2 * sigma_xy + c2) / den
    struct = (cov + c2 / 2) / s_den
    return con, struct, (var_x, var_y, sigma_xy, den, s_den)


def _chain_components(k_l, k_c, k_s, stats: Stats, lum, lum_den, con, struct, aux) -> list[torch.Tensor]:
    """Partials by (mu_x, mu_y, var_x, var_y, cov) of a map whose partials by l, c, s are k_l, k_c, k_s.

    With r = d(sigma_x sigma_y)/dvar_x = sigma_x sigma_y / (2 var_x): dc/dvar_x = (2 r - c) / den_c,
    ds/dvar_x = -s r / den_s, ds/dcov = 1 / den_s; zero by a variance below the flat floor.
    """
    mu_x, mu_y, var_x, var_y, _ = stats
    floored_x, floored_y, sigma_xy, den, s_den = aux
    d_mu_x, d_mu_y = _luminance_partials(k_l, mu_x, mu_y, lum, lum_den)
    d_cov = k_s / s_den
    along_r = 2 * k_c / den - d_cov * struct
    offset = k_c * con / den
    d_var_x, d_var_y = (
        torch.where(var >= _FLAT_VARIANCE, sigma_xy / (2 * floored) * along_r - offset, 0.0)
        for var, floored in ((var_x, floored_x), (var_y, floored_y))
    )
    return [d_mu_x, d_mu_y, d_var_x, d_var_y, d_cov]


# The fused pass: window moments forward, their adjoint backward, one batch slice at a time.


class _LocalStatistics(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, window: int):
        stats = [torch.empty_like(x) for _ in range(5)]
        for part in _batch_slices(x):
            for dst, src in zip(stats, _window_statistics(x[part], y[part], window), strict=True):
                dst[part] = src
        ctx.window = window
        ctx.save_for_backward(x, y, stats[0], stats[1])
        return tuple(stats)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: torch.Tensor):
        x, y, mu_x, mu_y = ctx.saved_tensors
        grad_x, grad_y = _outputs_for(ctx, x, y)
        for part in _batch_slices(x):
            raw = _moment_partials(mu_x[part], mu_y[part], [g[part] for g in grads])
            _moments_adjoint(x[part], y[part], raw, ctx.window, _part(grad_x, part), _part(grad_y, part))
        return grad_x, grad_y, None


class _FusedSSIM(torch.autograd.Function):
    """A form's map with its derivatives by the window moments computed alongside, then one adjoint pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, loss: SSIMLoss):
        need_grad = any(ctx.needs_input_grad[:2])
        value = torch.empty_like(x)
        partials = [torch.empty_like(x) for _ in range(5)] if need_grad else []
        for part in _batch_slices(x):
            stats = _window_statistics(x[part], y[part], loss.window)
            value_part, d_stats = loss.evaluate(stats, need_grad)
            value[part] = value_part
            if need_grad:
                for dst, src in zip(partials, _moment_partials(stats[0], stats[1], d_stats), strict=True):
                    dst[part] = src
        ctx.window = loss.window
        ctx.save_for_backward(x, y, *partials)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, y, *partials = ctx.saved_tensors
        grad_x, grad_y = _outputs_for(ctx, x, y)
        for part in _batch_slices(x):
            raw = [grad[part] * p[part] for p in partials]
            _moments_adjoint(x[part], y[part], raw, ctx.window, _part(grad_x, part), _part(grad_y, part))
        return grad_x, grad_y, None


def _window_statistics(x: torch.Tensor, y: torch.Tensor, window: int) -> Stats:
    """mu_x, mu_y, var_x, var_y, cov of (b, C, H, W) images: one box sum over the five stacked moments."""
    pad = window // 2
    moments = x.new_empty((x.shape[0], 5, *x.shape[1:-2], x.shape[-2] + 2 * pad, x.shape[-1] + 2 * pad))
    xp, yp, xx, yy, xy = moments.unbind(1)
    xp.copy_(F.pad(x, (pad,) * 4, mode="reflect"))
    yp.copy_(F.pad(y, (pad,) * 4, mode="reflect"))
    # Reflection commutes with pointwise products, so padding x and y pads all five moments.
    torch.mul(xp, xp, out=xx)
    torch.mul(yp, yp, out=yy)
    torch.mul(xp, yp, out=xy)
    mu_x, mu_y, e_xx, e_yy, e_xy = _box_sum(moments, window).mul_(1 / window**2).unbind(1)
    var_x = torch.addcmul(e_xx, mu_x, mu_x, value=-1)
    var_y = torch.addcmul(e_yy, mu_y, mu_y, value=-1)
    return mu_x, mu_y, var_x, var_y, torch.addcmul(e_xy, mu_x, mu_y, value=-1)


def _moment_partials(mu_x, mu_y, d_stats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Chain derivatives by (mu_x, mu_y, var_x, var_y, cov) to the window means of (x, y, xx, yy, xy)."""
    d_mu_x, d_mu_y, d_var_x, d_var_y, d_cov = d_stats
    return [
        d_mu_x - 2 * mu_x * d_var_x - mu_y * d_cov,
        d_mu_y - 2 * mu_y * d_var_y - mu_x * d_cov,
        d_var_x,
        d_var_y,
        d_cov,
    ]


def _moments_adjoint(x, y, raw: Sequence[torch.Tensor], window: int, grad_x, grad_y) -> None:
    """Back-propagate gradients by the five window means into ``grad_x`` / ``grad_y`` (each may be None)."""
    full = window - 1
    height, width = x.shape[-2:]
    # Zero padded by window - 1, a valid box sum is the adjoint of the forward box sum.
    padded = x.new_zeros((x.shape[0], 5, *x.shape[1:-2], height + 2 * full, width + 2 * full))
    inner = padded[..., full : full + height, full : full + width]
    for plane, grad in zip(inner.unbind(1), raw, strict=True):
        plane.copy_(grad)
    g_x, g_y, g_xx, g_yy, g_xy = _fold_reflection(_box_sum(padded, window), window // 2).unbind(1)
    scale = 1 / window**2
    if grad_x is not None:
        torch.addcmul(g_x, x, g_xx, value=2, out=grad_x)
        grad_x.addcmul_(y, g_xy).mul_(scale)
    if grad_y is not None:
        torch.addcmul(g_y, y, g_yy, value=2, out=grad_y)
        grad_y.addcmul_(x, g_xy).mul_(scale)


def _box_sum(t: torch.Tensor, window: int) -> torch.Tensor:
    """Sums over every ``window x window`` block: (..., h + window - 1, w + window - 1) -> (..., h, w)."""
    h = t.shape[-2] - window + 1
    w = t.shape[-1] - window + 1
    rows = t[..., 0:w] + t[..., 1 : 1 + w]
    for shift in range(2, window):
        rows.add_(t[..., shift : shift + w])
    out = rows[..., 0:h, :] + rows[..., 1 : 1 + h, :]
    for shift in range(2, window):
        out.add_(rows[..., shift : shift + h, :])
    return out


def _fold_reflection(t: torch.Tensor, pad: int) -> torch.Tensor:
    """Adjoint of reflection padding: adds each border value onto the pixel it mirrors (in place)."""
    h = t.shape[-2] - 2 * pad
    w = t.shape[-1] - 2 * pad
    for i in range(1, pad + 1):
        t[..., pad + i, :] += t[..., pad - i, :]
        t[..., pad + h - 1 - i, :] += t[..., pad + h - 1 + i, :]
    for i in range(1, pad + 1):
        t[..., pad : pad + h, pad + i] += t[..., pad : pad + h, pad - i]
        t[..., pad : pad + h, pad + w - 1 - i] += t[..., pad : pad + h, pad + w - 1 + i]
    return t[..., pad : pad + h, pad : pad + w]


def _batch_slices(x: torch.Tensor) -> list[slice]:
    """The whole batch off CPU; on CPU, slices whose five stacked moments fit ``_CPU_SLICE_BYTES``."""
    batch = x.shape[0]
    if x.device.type != "cpu":
        return [slice(0, batch)]
    step = max(1, _CPU_SLICE_BYTES // (5 * x[0].numel() * x.element_size()))
    return [slice(start, start + step) for start in range(0, batch, step)]


def _outputs_for(ctx, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    need_x, need_y = ctx.needs_input_grad[:2]
    return (torch.empty_like(x) if need_x else None), (torch.empty_like(y) if need_y else None)


def _part(t: torch.Tensor | None, part: slice) -> torch.Tensor | None:
    return None if t is None else t[part]


def _prepare(x: torch.Tensor, y: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair of images; contiguous, in one dtype, half precision raised to float32."""
    _check_window(window)
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(
            f"SSIM expects two (B, C, H, W) images of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"SSIM expects floating-point images, got {x.dtype} and {y.dtype}")
    if min(x.shape[-2:]) <= window // 2:
        raise ValueError(
            f"SSIM window {window} needs H and W greater than {window // 2} for reflection padding, "
            f"got {tuple(x.shape[-2:])}"
        )
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    return x.to(dtype).contiguous(), y.to(dtype).contiguous()


def _check_window(window: int) -> None:
    if not isinstance(window, int) or isinstance(window, bool) or window < 3 or window % 2 == 0:
        raise ValueError(f"SSIM window must be an odd integer >= 3, got {window!r}")


def _three_non_negative(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"SSIM {name} must be three finite non-negative numbers (l, c, s), got {values}")
    return values
