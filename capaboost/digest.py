"""A fingerprint of a model's CapaBoost masks, to prove that several processes built the same ones.

Masks are non-persistent buffers rebuilt from the mask seed, so two data-parallel ranks (or a
run and its reload) agree only if they built the same masks; DDP would not notice a mismatch
(with ``broadcast_buffers=False`` it never looks at buffers), so the ranks compare this digest.
"""
from __future__ import annotations

import hashlib

from torch import nn

from .model import peft_modules


def mask_digest(model: nn.Module) -> str:
    """sha256 hex over every CapaBoost module's name and its masks' bytes, modules in name order.

    For LoRA modules this is sha256(name, mask_A bytes, mask_B bytes, ...). A model without
    CapaBoost modules gets the digest of nothing.
    """
    h = hashlib.sha256()
    for name, module in sorted(peft_modules(model).items()):
        h.update(name.encode())
        for _, mask in module.masked_parameters():
            h.update(mask.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
