"""Every bad argument fails early with a ValueError that names the field (spec section 1, Errors)."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import capaboost
from capaboost import CapaBoostConfig
from capaboost.masks import make_masks
from tests.capaboost.tiny import tiny_deberta, tiny_roberta, tiny_vit

BAD_CONFIG = [
    ({"d": 0}, "d"), ({"d": -1}, "d"), ({"d": 1.5}, "d"), ({"d": True}, "d"),
    ({"density": 0.0}, "density"), ({"density": -0.5}, "density"), ({"density": 1.5}, "density"),
    ({"density": "0.5"}, "density"), ({"density": float("nan")}, "density"),
    ({"method": "ia3"}, "method"), ({"mask": "learned"}, "mask"), ({"init": "xavier"}, "init"),
    ({"r": 0}, "r"), ({"reduction_factor": 0}, "reduction_factor"), ({"prefix_length": 0}, "prefix_length"),
    ({"dropout": 1.0}, "dropout"), ({"dropout": -0.1}, "dropout"),
    ({"mask": "nm", "density": 0.3}, "nm"),
]


def _names(message: str, field: str) -> bool:
    return re.search(rf"\b{re.escape(field)}\b", message) is not None


@pytest.mark.parametrize("kwargs, field", BAD_CONFIG, ids=[f"{k}" for k, _ in BAD_CONFIG])
def test_bad_config_names_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError) as err:
        CapaBoostConfig(**kwargs)
    assert _names(str(err.value), field), str(err.value)


@pytest.mark.parametrize("kwargs, field, allowed", [
    ({"method": "x"}, "method", ("lora", "padapter", "prefix")),
    ({"mask": "x"}, "mask", ("random", "nm", "same", "none")),
])
def test_choice_errors_list_allowed_values(kwargs: dict, field: str, allowed: tuple[str, ...]) -> None:
    with pytest.raises(ValueError) as err:
        CapaBoostConfig(**kwargs)
    assert all(a in str(err.value) for a in allowed), str(err.value)


@pytest.mark.parametrize("args, field", [
    (((4, 8), 0, 0.5, "random", 0), "d"), (((4, 8), 2, 0.0, "random", 0), "density"),
    (((4, 8), 2, 1.01, "random", 0), "density"), (((4, 8), 2, 0.5, "bernoulli", 0), "mask"),
    (((4, 6), 2, 0.5, "nm", 0), "nm"),
])
def test_make_masks_bad_args(args: tuple, field: str) -> None:
    with pytest.raises(ValueError) as err:
        make_masks(*args)
    assert _names(str(err.value), field), str(err.value)


def test_nm_on_indivisible_dim_at_apply() -> None:
    """LoRA B is [out, r]: its input dim is r, so 2:4 needs r divisible by 4."""
    with pytest.raises(ValueError, match=r"\bnm\b"):
        capaboost.apply(tiny_roberta(), CapaBoostConfig(mask="nm", r=6))


def test_no_target_matched() -> None:
    with pytest.raises(ValueError) as err:
        capaboost.apply(tiny_roberta(), CapaBoostConfig(target_modules=("not_a_layer",)))
    assert _names(str(err.value), "target_modules") and "not_a_layer" in str(err.value)


def test_target_must_be_linear() -> None:
    """A suffix that names a non-Linear module (LayerNorm) is not a LoRA target."""
    with pytest.raises(ValueError, match="target_modules"):
        capaboost.apply(tiny_roberta(), CapaBoostConfig(target_modules=("LayerNorm",)))


@pytest.mark.parametrize("build", [tiny_deberta, tiny_vit], ids=["deberta-v2", "timm-vit"])
def test_prefix_rejected_without_past_key_values(build) -> None:
    model = build()
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    with pytest.raises(ValueError) as err:
        capaboost.apply(model, CapaBoostConfig(method="prefix"))
    assert _names(str(err.value), "method") and "roberta" in str(err.value)
    # rejected before touching the model
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before


def test_padapter_without_ffn_site() -> None:
    with pytest.raises(ValueError, match="padapter"):
        capaboost.apply(nn.Sequential(nn.Linear(4, 4)), CapaBoostConfig(method="padapter"))


def test_apply_twice_rejected() -> None:
    model = capaboost.apply(tiny_roberta(), CapaBoostConfig())
    with pytest.raises(ValueError, match="apply"):
        capaboost.apply(model, CapaBoostConfig())


def test_dict_round_trip_and_unknown_fields() -> None:
    cfg = CapaBoostConfig(method="padapter", d=3, density=0.7, mask="same", seed=5, target_modules="query")
    assert cfg.target_modules == ("query",)
    assert CapaBoostConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="bogus"):
        CapaBoostConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_defaults_are_the_papers() -> None:
    cfg = CapaBoostConfig()
    assert (cfg.method, cfg.d, cfg.density, cfg.mask, cfg.r, cfg.alpha) == ("lora", 2, 0.5, "random", 8, 16)
    assert cfg.scaling == 2.0
    assert CapaBoostConfig(d=1, density=1.0).density == 1.0  # the vanilla corner is valid
    assert torch.is_tensor(make_masks((2, 4), 1, 1.0))


@pytest.mark.parametrize("kwargs, field", [
    ({"alpha": 0}, "alpha"), ({"alpha": -8}, "alpha"), ({"alpha": float("inf")}, "alpha"),
    ({"method": "padapter", "dropout": 0.1}, "dropout"), ({"method": "prefix", "dropout": 0.1}, "dropout"),
    ({"mask": "none", "dropout": 0.0}, "dropout"),
    ({"mask": "nm", "r": 2}, "r"), ({"method": "prefix", "mask": "nm", "prefix_hidden": 6}, "prefix_hidden"),
    ({"mask_seed": -1}, "mask_seed"), ({"seed": 1, "mask_seed": 2}, "mask_seed"),
])
def test_configs_that_are_not_what_they_say(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError) as err:
        CapaBoostConfig(**kwargs)
    assert _names(str(err.value), field), str(err.value)


def test_valid_corners() -> None:
    assert CapaBoostConfig(mask="none", dropout=0.1).mask == "none"  # the dropout-only ablation (LoRA)
    assert CapaBoostConfig(mask="none", d=1).d == 1                   # one all-ones branch: vanilla
    assert CapaBoostConfig(mask="nm", r=8).r == 8


def test_seed_is_a_silent_alias() -> None:
    """The public spec's ``seed=`` keeps working: no warning (callers run with -W error too)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = CapaBoostConfig(seed=4)
    assert cfg == CapaBoostConfig(mask_seed=4) and "seed" not in cfg.to_dict()
    assert CapaBoostConfig.from_dict({**cfg.to_dict()}) == cfg
    assert CapaBoostConfig(seed=4, mask_seed=4).mask_seed == 4


def test_padapter_nm_checked_on_the_grouped_axis_before_touching_the_model() -> None:
    """The adapter's up projection groups along its width, hidden // reduction_factor = 32 // 16 = 2."""
    model = tiny_roberta()
    with pytest.raises(ValueError, match=r"nm.*last \(input\) axis.*size 2"):
        capaboost.apply(model, CapaBoostConfig(method="padapter", mask="nm"))
    assert all(p.requires_grad for p in model.parameters())
    assert not capaboost.peft_modules(model)


def test_config_and_backbones_import_without_torch() -> None:
    """run.py validates configs before importing torch: both modules must not pull it in."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from capaboost.config import CapaBoostConfig;"
            "from capaboost.backbones import BACKBONES; CapaBoostConfig();"
            "assert BACKBONES['timm-vit'].methods;"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["False", "False"]


def test_backbone_methods() -> None:
    from capaboost.backbones import BACKBONES

    assert {k for k, v in BACKBONES.items() if "prefix" in v.methods} == {"bert", "roberta", "xlm-roberta"}
    assert all({"lora", "padapter"} <= set(v.methods) for v in BACKBONES.values() if not v.decoder)
    decoders = {k for k, v in BACKBONES.items() if v.decoder}  # LoRA only (README, Decoder backbones)
    assert decoders == {"llama", "qwen2", "mistral", "gpt2"}
    assert all(BACKBONES[k].methods == ("lora",) for k in decoders)
