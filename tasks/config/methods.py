"""The PEFT-library baselines' table (DoRA, rsLoRA, PiSSA, VeRA, LoHa, AdaLoRA): their names, how each
is spelt in huggingface/peft, and the settings a run's config resolves to. Plain data, no torch: config
validation (tasks/config/runspec.py), reporting and the builder (tasks/training/baselines.py) all read it
here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BASE_METHOD = "lora"  # where a baseline goes, whose recipe it inherits, which row fields (r, alpha) it shares
_SHARED = ("bias", "layers_to_transform", "layers_pattern")


@dataclass(frozen=True)
class Baseline:
    """One PEFT method: its PEFT config class, the fixed arguments that make it that method, how our
    r/alpha/dropout are spelt there, and the extra PEFT arguments ``peft.options`` may set."""
    config_class: str
    fixed: tuple[tuple[str, Any], ...]
    r_key: str | None
    alpha_key: str | None
    dropout_key: str | None
    options: tuple[str, ...]


_LORA = ("LoraConfig", "r", "lora_alpha", "lora_dropout")
BASELINES: dict[str, Baseline] = {
    "dora": Baseline(_LORA[0], (("use_dora", True),), *_LORA[1:], _SHARED),
    "rslora": Baseline(_LORA[0], (("use_rslora", True),), *_LORA[1:], _SHARED),
    # "pissa" = full SVD; options.init_lora_weights=pissa_niter_<k> is PEFT's fast randomized SVD
    "pissa": Baseline(_LORA[0], (("init_lora_weights", "pissa"),), *_LORA[1:],
                      _SHARED + ("init_lora_weights",)),
    # VeRA has no alpha: its scale is the trained vectors themselves
    "vera": Baseline("VeraConfig", (), "r", None, "vera_dropout",
                     _SHARED + ("projection_prng_key", "save_projection", "d_initial")),
    # LoHa's dropout is on its rank components (PEFT's rank_dropout)
    "loha": Baseline("LoHaConfig", (), "r", "alpha", "rank_dropout",
                     ("layers_to_transform", "layers_pattern", "module_dropout", "init_weights")),
    # our r is AdaLoRA's target_r, the average rank left after pruning; tinit_ratio / tfinal_ratio are
    # fractions of the Trainer's real step count (AdaLoraSchedule turns them into PEFT's tinit / tfinal)
    "adalora": Baseline("AdaLoraConfig", (), "target_r", "lora_alpha", "lora_dropout",
                        _SHARED + ("init_r", "deltaT", "beta1", "beta2", "orth_reg_weight", "tinit_ratio",
                                   "tfinal_ratio")),
}
SCHEDULE_OPTIONS = ("tinit_ratio", "tfinal_ratio")  # ours, not PEFT fields
ADALORA_DEFAULT_INIT_R = 12  # PEFT's default


def is_baseline(method: str) -> bool:
    return method in BASELINES


def base_method(method: str) -> str:
    """The CapaBoost method whose targets, recipe and row fields a baseline shares (itself otherwise)."""
    return BASE_METHOD if is_baseline(method) else method


def settings(peft: dict[str, Any], hparams: dict[str, Any], mask_seed: int) -> dict[str, Any]:
    """The run's baseline settings as plain data (identity, run dir, preflight keys); ValueError names the
    offending ``peft.*`` key. Keys mirror CapaBoost's so run directories and rows read alike: one dense
    branch (d=1, density=1)."""
    method, b = peft["method"], BASELINES[peft["method"]]
    if peft["capaboost"]:
        raise ValueError(f"peft.capaboost=true: peft.method={method} is a PEFT-library baseline; CapaBoost "
                         f"masks apply to lora, padapter and prefix")
    # peft.init is CapaBoost-LoRA's A init (the paper recipes set the authors' one); a baseline keeps
    # PEFT's own init (peft.options.init_lora_weights where PEFT has one), so the key is not read here.
    options = dict(peft.get("options") or {})
    unknown = sorted(set(options) - set(b.options))
    if unknown:
        raise ValueError(f"peft.options {unknown} not allowed for {method}; allowed: {', '.join(b.options)} "
                         f"(r, alpha, dropout, targets and heads have their own peft.* keys)")
    r, alpha, dropout = hparams["r"], hparams["alpha"], peft["dropout"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"peft.r={r!r} must be an integer >= 1")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"peft.dropout={dropout!r} must be in [0, 1)")
    if method == "pissa" and not str(options.get("init_lora_weights", "pissa")).startswith("pissa"):
        raise ValueError("peft.options.init_lora_weights must be pissa or pissa_niter_<k> for pissa")
    if method == "adalora":
        init_r = options.setdefault("init_r", ADALORA_DEFAULT_INIT_R)
        if isinstance(init_r, bool) or not isinstance(init_r, int) or init_r < r:
            raise ValueError(f"peft.options.init_r={init_r!r} must be an integer >= peft.r={r} (the final "
                             f"average rank)")
        ratios = [options.setdefault(k, 0.0) for k in SCHEDULE_OPTIONS]
        if any(not isinstance(x, (int, float)) or x < 0 for x in ratios) or sum(ratios) >= 1:
            raise ValueError(f"peft.options tinit_ratio + tfinal_ratio = {sum(ratios)} must be >= 0 each "
                             f"and < 1 together (fractions of the training steps)")
    out = {"method": method, "d": 1, "density": 1.0, "mask": "random", "mask_seed": mask_seed, "r": r,
           "alpha": alpha, "dropout": dropout, "target_modules": peft["target_modules"],
           "options": dict(sorted(options.items()))}
    if peft["modules_to_save"] is not None:
        out["modules_to_save"] = peft["modules_to_save"]
    return out
