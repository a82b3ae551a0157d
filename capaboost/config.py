"""CapaBoostConfig: every knob of the method, validated once at construction."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

METHODS = ("lora", "padapter", "prefix")
MASKS = ("random", "nm", "same", "none")
INITS = ("peft", "official")


@dataclass(frozen=True)
class CapaBoostConfig:
    """One trainable weight per PEFT tensor, shared by ``d`` branches under static masks.

    ``d=1, density=1.0`` is the vanilla PEFT method. ``seed`` is the *mask* seed: the
    official code keeps the masks fixed across training seeds, and so do we.
    ``target_modules=None`` and ``modules_to_save=None`` pick the model family's
    defaults (see ``capaboost.targets``).
    """

    method: str = "lora"
    d: int = 2
    density: float = 0.5
    mask: str = "random"
    seed: int = 0
    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    init: str = "peft"
    reduction_factor: int = 16
    prefix_length: int = 16
    prefix_hidden: int = 512
    target_modules: tuple[str, ...] | None = None
    modules_to_save: tuple[str, ...] | None = None
    nm_group: int = 4

    def __post_init__(self) -> None:
        for name in ("target_modules", "modules_to_save"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif value is not None:
                object.__setattr__(self, name, tuple(value))
        _choice("method", self.method, METHODS)
        _choice("mask", self.mask, MASKS)
        _choice("init", self.init, INITS)
        _int_at_least("d", self.d, 1)
        if isinstance(self.density, bool) or not isinstance(self.density, (int, float)) \
                or not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be a number in (0, 1], got {self.density!r}")
        for name in ("r", "reduction_factor", "prefix_length", "prefix_hidden", "nm_group"):
            _int_at_least(name, getattr(self, name), 1)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.mask == "nm":
            n = self.density * self.nm_group
            if abs(n - round(n)) > 1e-9:
                raise ValueError(f"mask='nm' needs density * nm_group to be a whole number "
                                 f"(density={self.density}, nm_group={self.nm_group})")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("target_modules", "modules_to_save"):
            out[k] = list(out[k]) if out[k] is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CapaBoostConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CapaBoostConfig fields {unknown}; allowed: {sorted(known)}")
        return cls(**data)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _int_at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
