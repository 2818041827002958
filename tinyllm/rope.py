"""Rotary position embeddings (RoPE, Su et al. 2021, "RoFormer"): positions as rotations.

GPT adds a learned vector per position to the token embedding. RoPE instead *rotates* each
query and key by an angle proportional to its position, just before attention. Split a head's
D channels into D/2 pairs; pair i of the vector at position m turns by the angle m * theta_i,

    theta_i = base ** (-2i / D),   i = 0 .. D/2 - 1       (base 10000 in the paper)

so the first pairs spin fast and the last ones slowly. A rotation by m theta_i followed by the
transpose of one by n theta_i is one rotation by (m - n) theta_i, hence the score of a query at
m and a key at n, q_m . k_n = q^T R(m theta)^T R(n theta) k = q^T R((n - m) theta) k, depends on
the positions only through their difference: relative positions fall out of absolute rotations,
and nothing is learned.

**Which channels form a pair.** The paper pairs neighbours (x_0, x_1), (x_2, x_3), ...
(*interleaved*). Hugging Face's Llama pairs channel i with channel i + D/2 (*rotate-half*):

    rope(x) = x * cos + rotate_half(x) * sin,    rotate_half([x1, x2]) = [-x2, x1]

with x1, x2 the two halves of the channels and cos, sin (T, D) holding cos(m theta_i) and
sin(m theta_i) twice over, ``[angles, angles]``. Both are the same rotation of different channel
pairs, one a fixed permutation of the other; the attention scores are unchanged when the same
permutation is applied to the rows of W_q and W_k (q . k does not care how its channels are
ordered). That is what Hugging Face's conversion of Meta's interleaved checkpoints does, so the
weights on the Hub assume rotate-half, and so does tinyllm. Lesson 19 checks the equivalence.

Shapes: x (..., T, D), usually (B, n_head, T, D); cos and sin (T, D), or (B, T, D) when each
row of a batch has its own positions.
"""

from __future__ import annotations

from tinyllm.autograd import Function
from tinyllm.backend import get_array_module

__all__ = ["rope_angles", "rope_cos_sin", "rotate_half", "RoPE", "apply_rope"]


def rope_angles(positions, head_dim: int, base: float = 10000.0):
    """The rotation angles m * theta_i: positions (T,) -> (T, head_dim // 2), float64.

    theta_i = base ** (-2i / head_dim). ``positions`` is an integer array (NumPy or CuPy); the
    angles are computed in float64 so that position 4,000 is as exact as position 4.
    """
    if head_dim % 2:
        raise ValueError(f"RoPE rotates pairs of channels: head_dim must be even, got {head_dim}")
    xp = get_array_module(positions)
    # BEGIN SOLUTION
    inv_freq = base ** (-xp.arange(0, head_dim, 2, dtype="float64") / head_dim)
    return xp.asarray(positions, dtype="float64")[:, None] * inv_freq[None, :]
    # END SOLUTION


def rope_cos_sin(positions, head_dim: int, base: float = 10000.0, dtype="float32"):
    """cos and sin tables (T, head_dim) in rotate-half layout: each angle for channels i, i + D/2."""
    angles = rope_angles(positions, head_dim, base)
    xp = get_array_module(angles)
    both = xp.concatenate([angles, angles], axis=-1)
    return xp.cos(both).astype(dtype), xp.sin(both).astype(dtype)


def rotate_half(x):
    """[x1, x2] -> [-x2, x1] on the last axis (x1, x2 its halves): a quarter turn of each pair
    (x_i, x_{i + D/2}). On a backend array; rope(x) = x cos + rotate_half(x) sin."""
    xp = get_array_module(x)
    # BEGIN SOLUTION
    half = x.shape[-1] // 2
    return xp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    # END SOLUTION


class RoPE(Function):
    """y = x * cos + rotate_half(x) * sin, pair (x_i, x_{i+D/2}) turned by its angle.

    Rotations are orthogonal, so the gradient is the rotation back (by minus the angle):
    rotate_half is the linear map J with J^T = -J, hence
    dx = dy * cos + J^T (dy * sin) = dy * cos - rotate_half(dy * sin).
    """

    def __init__(self, cos, sin):
        self.cos, self.sin = cos, sin

    def forward(self, x):
        cos, sin = self.cos, self.sin
        # BEGIN SOLUTION
        return x * cos + rotate_half(x) * sin
        # END SOLUTION

    def backward(self, gy):
        cos, sin = self.cos, self.sin
        # BEGIN SOLUTION
        return (gy * cos - rotate_half(gy * sin),)
        # END SOLUTION


def apply_rope(x, cos, sin):
    """Rotate queries or keys ``x`` (B, H, T, D) by the tables ``cos``, ``sin`` of their positions
    (``rope_cos_sin``): (T, D) when every row has the same positions, or (B, T, D) when each row
    has its own (a left-padded batch). Returns a tensor of x's shape."""
    t, d = x.shape[-2], x.shape[-1]
    want = (t, d) if cos.ndim == 2 else (x.shape[0], t, d)
    if tuple(cos.shape) != want or tuple(sin.shape) != want:
        raise ValueError(f"apply_rope: x of shape {tuple(x.shape)} needs cos and sin tables of "
                         f"shape {(t, d)} (positions, head_dim) or {(x.shape[0], t, d)} (one row "
                         f"of positions per batch row), got {tuple(cos.shape)} and "
                         f"{tuple(sin.shape)}")
    if cos.ndim == 3:  # (B, T, D) -> (B, 1, T, D): the same rotation for every head
        cos, sin = cos[:, None], sin[:, None]
    if x.dtype != cos.dtype:  # a float64 gradient check with float32 tables, or the reverse
        cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
    return RoPE(cos, sin)(x)
