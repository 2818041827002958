"""Activation functions with a hand-derived gradient: GELU (and the error function it needs),
SiLU, leaky ReLU. ``tinyllm.functional`` re-exports them as ``F.gelu``, ``F.silu``,
``F.leaky_relu`` and ``F.erf``.

NumPy has no erf, so it is written here: in float32 the short polynomial of Abramowitz and
Stegun (7.1.26, within 1.5e-7, enough for float32), in float64 W. J. Cody's rational
approximations ("Rational Chebyshev approximations for the error function", Math. Comp. 23,
1969), accurate to float64 precision, so that float64 gradient checks and PyTorch comparisons
hold to 1e-12.
"""

from __future__ import annotations

import math

from tinyllm import backend
from tinyllm.autograd import Function
from tinyllm.backend import get_array_module
from tinyllm.ops import to_float

# ---------------------------------------------------------------------------- erf
_AS_P = 0.3275911
_AS_A = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)  # a5 ... a1

# Cody's coefficients, highest power first. erf(x) = x N1(x^2) / D1(x^2) for |x| <= 0.46875;
# erfc(x) = exp(-x^2) N2(x) / D2(x) for 0.46875 < x <= 4;
# erfc(x) = exp(-x^2) / x * (1/sqrt(pi) - z N3(z) / D3(z)), z = 1/x^2, for x > 4.
_N1 = (0.185777706184603153, 3.16112374387056560, 113.864154151050156, 377.485237685302021,
       3209.37758913846947)
_D1 = (1.0, 23.6012909523441209, 244.024637934444173, 1282.61652607737228, 2844.23683343917062)
_N2 = (2.15311535474403846e-8, 0.564188496988670089, 8.88314979438837594, 66.1191906371416295,
       298.635138197400131, 881.952221241769090, 1712.04761263407058, 2051.07837782607147,
       1230.33935479799725)
_D2 = (1.0, 15.7449261107098347, 117.693950891312499, 537.181101862009858, 1621.38957456669019,
       3290.79923573345963, 4362.61909014324716, 3439.36767414372164, 1230.33935480374942)
_N3 = (0.0163153871373020978, 0.305326634961232344, 0.360344899949804439, 0.125781726111229246,
       0.0160837851487422766, 6.58749161529837803e-4)
_D3 = (1.0, 2.56852019228982242, 1.87295284992346047, 0.527905102951428412,
       0.0605183413124413191, 0.00233520497626869185)


def _horner(coeffs, z):
    """c0 z^n + c1 z^(n-1) + ... + cn, evaluated as (((c0 z + c1) z + c2) ...)."""
    acc = coeffs[0]
    for c in coeffs[1:]:
        acc = acc * z + c
    return acc


def _erf_float32(z):
    """erf(z) = 1 - t (a1 + t (a2 + ... + t a5)) exp(-z^2), t = 1 / (1 + p |z|), for z >= 0."""
    xp = get_array_module(z)
    a = xp.abs(z)
    t = 1 / (1 + _AS_P * a)
    return xp.copysign(1 - t * _horner(_AS_A, t) * xp.exp(-a * a), z)


def _erf_float64(z):
    """Cody's three ranges, each computed on the clipped argument and chosen with ``where``."""
    xp = get_array_module(z)
    a = xp.abs(z)
    small = xp.minimum(a, 0.46875)
    erf_small = small * _horner(_N1, small * small) / _horner(_D1, small * small)
    mid = xp.clip(a, 0.46875, 4.0)
    erfc_mid = xp.exp(-mid * mid) * _horner(_N2, mid) / _horner(_D2, mid)
    big = xp.clip(a, 4.0, 30.0)  # erfc(30) underflows to 0: no need to go further
    zz = 1 / (big * big)
    erfc_big = xp.exp(-big * big) / big * (1 / math.sqrt(math.pi) - zz * _horner(_N3, zz)
                                            / _horner(_D3, zz))
    erf_abs = xp.where(a <= 0.46875, erf_small, 1 - xp.where(a <= 4.0, erfc_mid, erfc_big))
    return xp.copysign(erf_abs, z)


def erf(x):
    """The error function on a backend array (no gradient), in x's float dtype."""
    if x.dtype == "float64":
        return _erf_float64(x)
    x = to_float(x)
    return _erf_float32(x.astype("float32")).astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------- GELU
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


class GELU(Function):
    """GELU(x) = x Phi(x) with Phi the standard normal CDF, Phi(x) = (1 + erf(x / sqrt 2)) / 2.

    d/dx = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi). ``approximate="tanh"`` is
    GPT-2's 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), whose derivative is
    0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) du/dx with du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
    """

    def __init__(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu approximate must be 'none' or 'tanh', not {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        if self.approximate == "tanh":
            self.t = xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
            return 0.5 * x * (1 + self.t)
        self.cdf = 0.5 * (1 + erf(x * (1 / math.sqrt(2))))
        return x * self.cdf

    def backward(self, gy):
        x = self.x
        if self.approximate == "tanh":
            t = self.t
            du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            return (gy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du),)
        pdf = get_array_module(x).exp(-0.5 * x * x) * _INV_SQRT_2PI
        return (gy * (self.cdf + x * pdf),)

    def fast_forward(self, x):
        """The same formulas in place, in float32 (float64 keeps Cody's erf, for gradient
        checks): two buffers the size of x instead of about twenty temporaries."""
        if x.dtype != "float32" or x.ndim == 0:
            return self.forward(x)
        xp = get_array_module(x)
        self.x = x
        y, keep = xp.empty_like(x), xp.empty_like(x)
        if self.approximate == "tanh":
            _gelu_tanh_kernel(x, y, keep)
            self.t = keep
        else:
            _gelu_erf_kernel(x, y, keep)
            self.cdf = keep
        return y

    def fast_backward(self, gy):
        x = self.x
        if x.dtype != "float32" or x.ndim == 0:
            return self.backward(gy)
        gx = get_array_module(x).empty_like(x)
        if self.approximate == "tanh":
            _gelu_tanh_grad_kernel(x, self.t, gy, gx)
        else:
            _gelu_erf_grad_kernel(x, self.cdf, gy, gx)
        return (gx,)


# The fast paths' kernels: each writes its outputs into the arrays it is given, in float32,
# with the plain forms' formulas (the same polynomial and constants, so the two agree to
# rounding); every line is one pass over x, and only the tanh gradient needs a temporary.
_F = {k: backend.np.float32(v) for k, v in dict(
    half=0.5, one=1.0, p=_AS_P / math.sqrt(2), c=0.044715, s=_SQRT_2_OVER_PI,
    s3c=3 * 0.044715 * _SQRT_2_OVER_PI, pdf=_INV_SQRT_2PI, mhalf=-0.5).items()}
_AS_A32_HALF = [backend.np.float32(-0.5 * a) for a in _AS_A]
_SIGN_BIT = backend.np.int32(-2**31)


def _gelu_erf_kernel(x, y, cdf):
    """cdf = Phi(x) = 1/2 + sign(x) (1/2 - 1/2 t P(t) exp(-x^2/2)), t = 1/(1 + p |x|/sqrt 2)."""
    xp, f = get_array_module(x), _F
    t = xp.abs(x, out=y)  # y holds t until the end
    t *= f["p"]
    t += f["one"]
    xp.reciprocal(t, out=t)
    xp.multiply(t, _AS_A32_HALF[0], out=cdf)
    for a in _AS_A32_HALF[1:]:  # Horner's rule: cdf = -t P(t) / 2 (the -1/2 is in the
        cdf += a                # coefficients: a power of two, so the rounding is the same)
        cdf *= t
    e = xp.multiply(x, x, out=t)  # exp(-x^2/2) = exp(-(|x|/sqrt 2)^2)
    e *= f["mhalf"]
    xp.exp(e, out=e)
    cdf *= e  # -erfc(|x|/sqrt 2) / 2
    cdf += f["half"]  # erf(|x|/sqrt 2) / 2, never below +0
    _copysign(cdf, x, scratch=y)
    cdf += f["half"]
    xp.multiply(x, cdf, out=y)


def _copysign(a, b, scratch):
    """a = copysign(a, b) in place, for a >= +0 (sign bit clear). NumPy's copysign runs an
    element-at-a-time loop (about 6 times a multiply); or-ing b's sign bit into a, on int32
    views, is two vectorised passes and the same bits. ``scratch``: a float32 array like a."""
    xp = get_array_module(a)
    if xp is not backend.np or a.dtype != "float32" or not all(
            v.flags.c_contiguous for v in (a, b, scratch)):
        xp.copysign(a, b, out=a)
        return
    sign = xp.bitwise_and(b.view(xp.int32), _SIGN_BIT, out=scratch.view(xp.int32))
    xp.bitwise_or(a.view(xp.int32), sign, out=a.view(xp.int32))


def _gelu_erf_grad_kernel(x, cdf, gy, gx):
    """gx = gy (Phi(x) + x phi(x)), phi(x) = exp(-x^2/2) / sqrt(2 pi) recomputed (no third saved
    array)."""
    xp, f = get_array_module(x), _F
    xp.multiply(x, x, out=gx)
    gx *= f["mhalf"]
    xp.exp(gx, out=gx)
    gx *= x
    gx *= f["pdf"]
    gx += cdf
    gx *= gy


def _gelu_tanh_kernel(x, y, t):
    """t = tanh(sqrt(2/pi) (x + 0.044715 x^3)), y = x (1 + t) / 2."""
    xp, f = get_array_module(x), _F
    xp.multiply(x, x, out=t)
    t *= f["c"]
    t += f["one"]
    t *= x
    t *= f["s"]
    xp.tanh(t, out=t)
    xp.add(t, f["one"], out=y)
    y *= x
    y *= f["half"]


def _gelu_tanh_grad_kernel(x, t, gy, gx):
    """gx = gy (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))."""
    xp, f = get_array_module(x), _F
    xp.multiply(x, x, out=gx)
    gx *= f["s3c"]
    gx += f["s"]  # du/dx
    gx *= x
    d = t * t
    xp.subtract(f["one"], d, out=d)
    gx *= d  # x (1 - t^2) du/dx
    gx += t
    gx += f["one"]
    gx *= f["half"]
    gx *= gy


def gelu(x, approximate: str = "none"):
    """Gaussian error linear unit; ``approximate`` is ``"none"`` (exact, erf) or ``"tanh"``."""
    return GELU(approximate)(x)


# ---------------------------------------------------------------------------- SiLU, leaky ReLU
class SiLU(Function):
    """SiLU(x) = x sigmoid(x) (also called swish); d/dx = s (1 + x (1 - s)), s = sigmoid(x)."""

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        self.s = 0.5 * (xp.tanh(0.5 * x) + 1)  # sigmoid without overflow in exp
        return x * self.s

    def backward(self, gy):
        s = self.s
        return (gy * s * (1 + self.x * (1 - s)),)


def silu(x):
    """x * sigmoid(x), the activation of Llama's SwiGLU feed-forward."""
    return SiLU()(x)


class LeakyReLU(Function):
    """x where x > 0, else slope * x; the gradient is 1 or slope (slope at x = 0, as PyTorch)."""

    def __init__(self, slope):
        self.slope = slope

    def forward(self, x):
        xp = get_array_module(x)
        self.positive = x > 0
        return xp.where(self.positive, x, x * self.slope)

    def backward(self, gy):
        return (get_array_module(gy).where(self.positive, gy, gy * self.slope),)


def leaky_relu(x, negative_slope: float = 0.01):
    return LeakyReLU(negative_slope)(x)
