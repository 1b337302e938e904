"""The counter-based generator: uniforms and Gamma draws keyed by (seed, position, token, draw).

No generator state and no host sync: the same key gives the same number on every device, in every
batch and after any preemption -- what makes a seeded noisy or sampled row reproducible.
"""

from __future__ import annotations

import math

import torch

_GAMMA_TRIES = 6  # Marsaglia-Tsang proposals per Gamma draw (each accepted with p >= 0.95)


def counter_log_gamma(
    alpha: torch.Tensor, seed: torch.Tensor, position: torch.Tensor, ids: torch.Tensor
) -> torch.Tensor:
    """log of Gamma(``alpha``) draws [M, C] (-inf where alpha = 0), token ``ids[b, c]``'s draw
    keyed by (``seed[b]``, ``position[b]``, the token): normalized over any set of tokens they
    are a Dirichlet draw. ``Gamma(a) = Gamma(a + 1)·U^(1/a)``, in log space so small shapes
    neither underflow nor divide 0 by 0.

    >>> a = torch.tensor([[0.5, 0.0]])
    >>> g = counter_log_gamma(a, torch.tensor([1]), torch.tensor([0]), torch.tensor([[7, 8]]))
    >>> bool(torch.isfinite(g[0, 0])), g[0, 1].item()
    (True, -inf)
    """
    seed, pos = seed[:, None, None], position[:, None, None]
    log_gamma = _log_gamma_plus_one(alpha, seed, pos, ids)
    draw = ids.new_full((1, 1, 1), 3 * _GAMMA_TRIES)
    boost = counter_uniform(seed, pos, ids[:, :, None], draw)[..., 0]
    return torch.where(alpha > 0, log_gamma + torch.log(boost) / alpha, float("-inf"))


def _log_gamma_plus_one(alpha, seed, pos, ids) -> torch.Tensor:
    """log of a Gamma(alpha + 1) draw [M, C] (Marsaglia-Tsang, shape >= 1): a fixed number of
    tries, one at a time ([M, C, 3] uniforms each: the memory of one), the first accepted kept
    (0 if none is: p <= 0.05 per try). ``seed`` and ``pos`` [M, 1, 1], ``ids`` [M, C]."""
    d = alpha + 1.0 - 1.0 / 3.0  # [M, C]
    c = 1.0 / torch.sqrt(9.0 * d)
    log_v = torch.zeros_like(d)
    found = torch.zeros_like(d, dtype=torch.bool)
    three = torch.arange(3, device=alpha.device).reshape(1, 1, 3)
    for t in range(_GAMMA_TRIES):  # a fixed count, not data-dependent
        u = counter_uniform(seed, pos, ids[:, :, None], three + 3 * t)  # [M, C, 3]
        z = torch.sqrt(-2.0 * torch.log(u[..., 0])) * torch.cos(2.0 * math.pi * u[..., 1])
        v = (1.0 + c * z) ** 3
        lv = torch.log(v.clamp(min=1e-30))
        accept = (v > 0) & (torch.log(u[..., 2]) < 0.5 * z * z + d - d * v + d * lv)
        log_v = torch.where(accept & ~found, lv, log_v)
        found = found | accept
    return torch.log(d) + log_v


_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32) without int64 overflow (16-bit halves)."""
    return ((x & 0xFFFF) * c + (((x >> 16) * (c & 0xFFFF)) << 16)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def counter_uniform(seed, position, token, draw) -> torch.Tensor:
    """Uniforms in (0, 1), float32, from a stateless hash of four broadcastable long tensors.

    The same (seed, position, token, draw) gives the same number on every device and in every
    batch; no generator state, no host sync.

    >>> a = counter_uniform(torch.tensor(1), torch.tensor(2), torch.arange(3), torch.tensor(0))
    >>> bool(((a > 0) & (a < 1)).all()), torch.equal(a, counter_uniform(
    ...     torch.tensor(1), torch.tensor(2), torch.arange(3), torch.tensor(0)))
    (True, True)
    """
    device = token.device
    seed = seed.to(device=device, dtype=torch.long)
    h = _hash32(draw.to(device=device, dtype=torch.long) & _M32)
    h = _hash32(h ^ (token.long() & _M32))
    h = _hash32(h ^ (position.to(device=device, dtype=torch.long) & _M32))
    h = _hash32(h ^ ((seed >> 32) & _M32))
    h = _hash32(h ^ (seed & _M32))
    # 23 bits: (2^23 - 1) + 0.5 is exact in float32, so u stays in [2^-24, 1 - 2^-24].
    return ((h >> 9).float() + 0.5) * (1.0 / (1 << 23))
