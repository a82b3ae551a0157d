"""Static binary masks, drawn once from a private generator keyed by a stable hash.

Masks must be identical in every process, on every device, in every torch build and whatever
order the modules are built in (DDP ranks, a resumed run, ``load`` in a fresh interpreter), so
they never touch the global RNG, never use Python's salted ``hash()``, and never depend on how a
sort breaks ties: positions are ranked by distinct integers (a seeded permutation), so there are
none. A checkpoint stores the masks' digest and ``load`` refuses masks that differ.

Every mask ``capaboost.apply`` places comes from ``site_masks``; ``mask_maker`` swaps the function it
draws with for a block (e.g. a model built on the meta device, shapes only, keeping real masks aside).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING

import torch

from .config import MASKS

if TYPE_CHECKING:
    from .config import CapaBoostConfig


def mask_seed(seed: int, *names: str) -> int:
    """A 63-bit seed from (mask seed, module name, tensor name): same everywhere, always."""
    key = "/".join([str(int(seed)), *names]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)


def make_masks(shape: Sequence[int], d: int, density: float, kind: str = "random",
               seed: int = 0, nm_group: int = 4) -> torch.Tensor:
    """``d`` boolean masks of ``shape``, stacked to ``(d, *shape)``.

    random: each branch keeps exactly ``round(density * numel)`` entries, drawn without
    replacement. nm: N:M along the last (input) axis, N = density * M, groups of M consecutive
    entries. same: one random mask repeated d times (ablation). none: all ones (the dropout-only
    ablation).
    """
    shape = tuple(int(s) for s in shape)
    if kind not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {kind!r}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be an integer >= 1, got {d!r}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    if kind == "none" or density == 1.0:
        return torch.ones((d, *shape), dtype=torch.bool)
    gen = torch.Generator().manual_seed(int(seed))
    draws = 1 if kind == "same" else d
    masks = _nm(shape, draws, density, nm_group, gen) if kind == "nm" \
        else _random(shape, draws, density, gen)
    return masks.expand(d, *shape).clone() if kind == "same" else masks


MaskMaker = Callable[..., torch.Tensor]  # make_masks' signature: (shape, d, density, kind, seed, nm_group)
_MAKER: ContextVar[MaskMaker | None] = ContextVar("capaboost_mask_maker", default=None)


@contextlib.contextmanager
def mask_maker(maker: MaskMaker) -> Iterator[None]:
    """Inside the block every mask capaboost places is ``maker(shape, d, density, kind, seed, nm_group)``
    instead of ``make_masks(...)``: the hook for building a model whose tensors have no values (meta or
    fake tensors), where the masks must still be drawn for real to be counted."""
    token = _MAKER.set(maker)
    try:
        yield
    finally:
        _MAKER.reset(token)


def site_masks(cfg: CapaBoostConfig, shape: Sequence[int], *names: str) -> torch.Tensor:
    """The ``cfg.d`` masks of the PEFT weight ``names`` (module name, tensor name): the one call site of
    ``make_masks`` (or of the ``mask_maker`` in force) for everything ``capaboost.apply`` builds."""
    make = _MAKER.get() or make_masks
    return make(tuple(shape), cfg.d, cfg.density, cfg.mask, mask_seed(cfg.mask_seed, *names), cfg.nm_group)


def _distinct_ranks(gen: torch.Generator, batch: tuple[int, ...], n: int) -> torch.Tensor:
    """A uniformly random order of ``n`` positions per batch entry, from keys that cannot tie:
    random integers scaled by n plus the position, so no sort can order them two ways."""
    keys = torch.randint(0, (2**62) // n, (*batch, n), generator=gen) * n + torch.arange(n)
    return keys.argsort(dim=-1)


def _random(shape: tuple[int, ...], d: int, density: float, gen: torch.Generator) -> torch.Tensor:
    numel = math.prod(shape)
    keep = max(1, round(density * numel))
    return (_distinct_ranks(gen, (d,), numel) < keep).view(d, *shape)


def _nm(shape: tuple[int, ...], d: int, density: float, m: int, gen: torch.Generator) -> torch.Tensor:
    if shape[-1] % m:
        raise ValueError(f"mask='nm' groups M={m} consecutive entries along the last (input) axis, "
                         f"of size {shape[-1]} in a {shape} weight: not a multiple of M")
    n = round(density * m)
    if abs(n - density * m) > 1e-9 or n < 1:
        raise ValueError(f"mask='nm' needs density * M to be a whole number >= 1 "
                         f"(density={density}, M={m})")
    return (_distinct_ranks(gen, (d, *shape[:-1], shape[-1] // m), m) < n).view(d, *shape)
