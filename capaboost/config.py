"""CapaBoostConfig: every knob of the method, validated once at construction (no torch needed)."""
from __future__ import annotations

import math
from dataclasses import InitVar, asdict, dataclass, fields
from typing import Any

METHODS = ("lora", "padapter", "prefix")
MASKS = ("random", "nm", "same", "none")
INITS = ("peft", "official")


@dataclass(frozen=True)
class CapaBoostConfig:
    """One trainable weight per PEFT tensor, shared by ``d`` branches under static masks.

    ``d=1, density=1.0`` is the vanilla PEFT method. ``mask_seed`` seeds the masks only: the
    official code keeps them fixed across training seeds, and so do we (``seed=``, its first name,
    is an alias that keeps working). ``target_modules=None`` and ``modules_to_save=None`` pick the
    backbone's defaults (``capaboost.backbones``). ``mask="nm"`` keeps N = density * nm_group of every
    nm_group consecutive entries along each masked weight's last (input) axis: A's in_features
    and B's r for LoRA, so r must be a multiple of nm_group. ``dropout`` is LoRA's input dropout,
    drawn per branch; the adapter and prefix have none in the official code, so it is refused there.
    """

    method: str = "lora"
    d: int = 2
    density: float = 0.5
    mask: str = "random"
    mask_seed: int | None = None  # None: 0 (or the alias ``seed``)
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
    seed: InitVar[int | None] = None

    def __post_init__(self, seed: int | None) -> None:
        if seed is not None:  # the public spec's name: it keeps working, silently
            if self.mask_seed is not None and self.mask_seed != seed:
                raise ValueError(f"seed={seed!r} and mask_seed={self.mask_seed!r} differ: "
                                 f"give mask_seed only")
            object.__setattr__(self, "mask_seed", seed)
        if self.mask_seed is None:
            object.__setattr__(self, "mask_seed", 0)
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
        _int_at_least("mask_seed", self.mask_seed, 0)
        if not _number(self.density) or not 0.0 < self.density <= 1.0:
            raise ValueError(f"density must be a number in (0, 1], got {self.density!r}")
        for name in ("r", "reduction_factor", "prefix_length", "prefix_hidden", "nm_group"):
            _int_at_least(name, getattr(self, name), 1)
        if not _number(self.alpha) or not self.alpha > 0:
            raise ValueError(f"alpha must be a number > 0, got {self.alpha!r}")
        if not _number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.dropout > 0 and self.method != "lora":
            raise ValueError(f"dropout={self.dropout} applies to method='lora' only: method="
                             f"{self.method!r} has no dropout (set dropout=0)")
        if self.mask == "none" and self.d > 1 and self.dropout == 0:
            raise ValueError(f"mask='none' with dropout=0 is not an ablation: its {self.d} identical "
                             f"branches equal d=1 with alpha x {self.d}; set dropout > 0 (method='lora')")
        if self.mask == "nm":
            self._check_nm()

    def _check_nm(self) -> None:
        n = self.density * self.nm_group
        if abs(n - round(n)) > 1e-9:
            raise ValueError(f"mask='nm' needs density * nm_group to be a whole number "
                             f"(density={self.density}, nm_group={self.nm_group})")
        # the grouped axis known from the config alone (the others are checked by apply)
        grouped = {"lora": ("r", "LoRA B's input axis"), "prefix": ("prefix_hidden", "the prefix MLP's up "
                   "projection input axis")}.get(self.method)
        if grouped and getattr(self, grouped[0]) % self.nm_group:
            raise ValueError(f"mask='nm' groups nm_group={self.nm_group} entries along {grouped[1]}, "
                             f"{grouped[0]}={getattr(self, grouped[0])}: make it a multiple of nm_group")

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
        """Also reads dicts written before the rename (``seed`` for ``mask_seed``)."""
        data = dict(data)
        if "seed" in data and "mask_seed" not in data:
            data["mask_seed"] = data.pop("seed")
        known = {f.name for f in fields(cls)} | {"seed"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CapaBoostConfig fields {unknown}; allowed: {sorted(known - {'seed'})}")
        return cls(**data)


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _int_at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
