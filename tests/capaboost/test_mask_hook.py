"""capaboost.masks.mask_maker: every mask capaboost places comes through the hook (preflight counts masks
on shapes-only models with it, so a call site that drew its masks another way would be silently wrong)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import capaboost
from capaboost import CapaBoostConfig
from capaboost.masks import make_masks, mask_maker
from tests.capaboost.tiny import tiny_gpt2, tiny_roberta, tiny_vit

CASES = [("lora", tiny_roberta), ("padapter", tiny_roberta), ("prefix", tiny_roberta), ("lora", tiny_vit),
         ("padapter", tiny_vit), ("lora", tiny_gpt2)]


@pytest.mark.parametrize(("method", "build"), CASES, ids=[f"{m}-{b.__name__}" for m, b in CASES])
def test_every_placed_mask_is_one_the_hook_made(method: str, build) -> None:
    made: list[torch.Tensor] = []
    calls: list[tuple] = []

    def maker(shape, d, density, kind, seed, nm_group):
        calls.append((tuple(shape), d, density, kind, seed, nm_group))
        made.append(make_masks(shape, d, density, kind, seed, nm_group))
        return made[-1]

    cfg = CapaBoostConfig(method=method, d=3, density=0.5, r=4, reduction_factor=4, prefix_length=2,
                          prefix_hidden=8, mask_seed=5)
    with mask_maker(maker):
        model = capaboost.apply(build(), cfg)
    placed = [mask for mod in capaboost.peft_modules(model).values() for _, mask in mod.masked_parameters()]
    assert placed, "no masked module was built"
    ours = {m.data_ptr() for m in made}
    stray = [tuple(m.shape) for m in placed if m.data_ptr() not in ours]
    assert not stray, f"masks of shape {stray} were made without capaboost.masks.mask_maker"
    # the hook is asked for capaboost's own masks: its arguments are the config's
    assert {c[1:4] + c[5:] for c in calls} == {(3, 0.5, "random", cfg.nm_group)}
    # and outside the block nothing is left of the hook: the same model, masks drawn by make_masks
    again = capaboost.apply(build(), cfg)
    for (_, a), (_, b) in zip(*(
            [pm for mod in capaboost.peft_modules(m).values() for pm in mod.masked_parameters()]
            for m in (model, again)), strict=True):
        assert torch.equal(a, b)


def test_a_hook_that_returns_other_masks_changes_the_model() -> None:
    """The hook really decides: all-ones masks in, all-ones masks placed (make_masks' would be half)."""
    with mask_maker(lambda shape, d, *rest: torch.ones((d, *shape), dtype=torch.bool)):
        model = capaboost.apply(tiny_roberta(), CapaBoostConfig(method="lora", d=2, density=0.5, r=4))
    masks = [m for mod in capaboost.peft_modules(model).values() for _, m in mod.masked_parameters()]
    assert masks and all(bool(m.all()) for m in masks)


def test_make_masks_is_called_only_by_site_masks() -> None:
    """Statically: no module of capaboost but masks.py names make_masks (a new call site must use
    site_masks, which honours the hook)."""
    root = Path(capaboost.__file__).parent
    users = [p.name for p in root.glob("*.py") if p.name != "masks.py" and any(
        isinstance(n, (ast.Name, ast.alias, ast.Attribute)) and "make_masks" in
        (getattr(n, "id", None), getattr(n, "name", None), getattr(n, "attr", None))
        for n in ast.walk(ast.parse(p.read_text())))]
    assert users == []
