"""save / load (compact: masked weights packed to their union, masks rebuilt) and export_peft."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

import capaboost
from capaboost import CapaBoostConfig
from tests.capaboost.tiny import batch, labels, lora_layers, randomize_lora_B, tiny_roberta, tiny_vit

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "lora": CapaBoostConfig(method="lora", d=2, density=0.5, r=4, alpha=8, seed=3),
    "padapter": CapaBoostConfig(method="padapter", d=3, density=0.5, reduction_factor=4, seed=3),
    "prefix": CapaBoostConfig(method="prefix", d=2, density=0.5, prefix_length=4, prefix_hidden=16, seed=3),
}


def _trained(cfg: CapaBoostConfig, steps: int = 3) -> nn.Module:
    model = capaboost.apply(tiny_roberta(), cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(steps):
        F.cross_entropy(model(**batch(seed=step)).logits, labels(seed=step)).backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def _file_numel(path: Path) -> int:
    with safe_open(str(path), "pt") as f:
        return sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_save_load_fresh_model(tmp_path: Path, method: str) -> None:
    model = _trained(CONFIGS[method])
    with torch.no_grad():
        expected = model(**batch()).logits
        untrained = capaboost.apply(tiny_roberta(), CONFIGS[method])(**batch()).logits
    assert (expected - untrained).abs().max() > 1e-4  # training changed something worth saving
    path = tmp_path / "ckpt" / "adapter.safetensors"
    capaboost.save(model, path)
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    torch.manual_seed(77)  # global RNG state must not matter
    fresh = capaboost.load(tiny_roberta(), path).eval()
    assert fresh.capaboost_config == model.capaboost_config
    with torch.no_grad():
        assert torch.equal(fresh(**batch()).logits, expected)
    # loading into a model that already has the same CapaBoost modules works too
    again = capaboost.load(capaboost.apply(tiny_roberta(), CONFIGS[method]), path).eval()
    with torch.no_grad():
        assert torch.equal(again(**batch()).logits, expected)


@pytest.mark.slow
def test_load_in_subprocess(tmp_path: Path) -> None:
    """A fresh interpreter (other hash seed, other global RNG) rebuilds the masks and the outputs."""
    expected = {}
    for method, cfg in CONFIGS.items():
        model = _trained(cfg)
        capaboost.save(model, tmp_path / f"{method}.safetensors")
        with torch.no_grad():
            expected[method] = model(**batch()).logits
    code = ("import sys, torch, capaboost; from tests.capaboost.tiny import tiny_roberta, batch;"
            "torch.manual_seed(5); torch.rand(3); d = sys.argv[1]\n"
            "for m in sys.argv[2:]:\n"
            "    model = capaboost.load(tiny_roberta(), f'{d}/{m}.safetensors').eval()\n"
            "    torch.save(model(**batch()).logits.detach(), f'{d}/{m}.pt')")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "7"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path), *CONFIGS], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    for method, logits in expected.items():
        assert torch.equal(torch.load(tmp_path / f"{method}.pt"), logits), method


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_file_holds_effective_params(tmp_path: Path, method: str) -> None:
    """Only the union of the masks is stored: the file's tensor entries == count_parameters' effective."""
    model = capaboost.apply(tiny_roberta(), CONFIGS[method])
    path = tmp_path / "a.safetensors"
    capaboost.save(model, path)
    counts = capaboost.count_parameters(model)
    assert _file_numel(path) == counts["effective"] < counts["trainable"]
    vanilla = CapaBoostConfig(**{**CONFIGS[method].to_dict(), "d": 1, "density": 1.0})
    full = capaboost.apply(tiny_roberta(), vanilla)
    full_path = tmp_path / "full.safetensors"
    capaboost.save(full, full_path)
    assert _file_numel(full_path) == counts["trainable"]
    saved_bytes = 4 * (counts["trainable"] - counts["effective"])
    assert full_path.stat().st_size - path.stat().st_size >= saved_bytes - 1024  # float32 entries not stored


def test_load_into_merged_model(tmp_path: Path) -> None:
    """Regression: loading into a merged model left the old delta folded into the base weights."""
    trained = _trained(CONFIGS["lora"])
    capaboost.save(trained, tmp_path / "a.safetensors")
    target = capaboost.apply(tiny_roberta(), CONFIGS["lora"])
    randomize_lora_B(target)
    capaboost.merge(target)
    capaboost.load(target, tmp_path / "a.safetensors")
    assert all(layer.merged for layer in lora_layers(target).values())
    with torch.no_grad():
        torch.testing.assert_close(target(**batch()).logits, trained(**batch()).logits, atol=1e-5, rtol=0)
        capaboost.unmerge(target)
        torch.testing.assert_close(target.roberta.encoder.layer[0].attention.self.query.base_layer.weight,
                                   tiny_roberta().roberta.encoder.layer[0].attention.self.query.weight,
                                   atol=1e-6, rtol=0)


def test_load_rejects_bad_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a CapaBoost checkpoint"):
        capaboost.load(tiny_roberta(), other)
    path = tmp_path / "a.safetensors"
    capaboost.save(capaboost.apply(tiny_roberta(), CONFIGS["lora"]), path)
    with pytest.raises(ValueError, match="differs"):
        capaboost.load(capaboost.apply(tiny_roberta(), CONFIGS["padapter"]), path)
    with pytest.raises(ValueError, match="apply"):
        capaboost.save(tiny_roberta(), tmp_path / "b.safetensors")


@pytest.mark.parametrize("d, density", [(1, 1.0), (2, 0.5), (3, 0.3)])
def test_export_peft_roundtrip(tmp_path: Path, d: int, density: float) -> None:
    """A stock PEFT LoRA of rank d*r: PeftModel.from_pretrained on a fresh backbone gives our outputs."""
    from peft import PeftModel

    model = _trained(CapaBoostConfig(d=d, density=density, r=4, alpha=8, dropout=0.1,
                                     target_modules=("query", "key", "value")))
    with torch.no_grad():
        expected = model(**batch()).logits
    capaboost.export_peft(model, tmp_path / "peft")
    assert (tmp_path / "peft" / "adapter_config.json").exists()
    # the export leaves our model untouched
    assert len(lora_layers(model)) == 6 and all(not m.merged for m in lora_layers(model).values())
    loaded = PeftModel.from_pretrained(tiny_roberta(), str(tmp_path / "peft")).eval()
    assert loaded.peft_config["default"].r == d * 4
    with torch.no_grad():
        got = loaded(**batch()).logits
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        assert (got - tiny_roberta()(**batch()).logits).abs().max() > 1e-4


def test_export_peft_merged_and_vit(tmp_path: Path) -> None:
    from peft import PeftModel

    model = capaboost.apply(tiny_vit(), CapaBoostConfig(d=2, density=0.5, r=4, alpha=8,
                                                        target_modules=("qkv",)))  # the fused option
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(0, 0.1)
        model.head.weight.normal_(0, 0.1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    capaboost.merge(model)  # a merged model exports its (unmerged) factors
    capaboost.export_peft(model, tmp_path / "peft")
    loaded = PeftModel.from_pretrained(tiny_vit(), str(tmp_path / "peft")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, atol=1e-5, rtol=0)


def test_export_peft_rejects_other_methods(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lora"):
        capaboost.export_peft(capaboost.apply(tiny_roberta(), CONFIGS["padapter"]), tmp_path / "x")


def _rewrite(path: Path, out: Path, tensors=None, **meta_changes) -> Path:
    """A copy of a save() file with its tensors or metadata changed."""
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        meta = {**f.metadata(), **meta_changes}
    save_file(tensors if tensors is not None else load_file(str(path)), str(out), metadata=meta)
    return out


def test_load_refuses_other_masks(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    model = capaboost.apply(tiny_roberta(), CONFIGS["lora"])
    capaboost.save(model, path)
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["mask_digest"] == capaboost.mask_digest(model)
    forged = _rewrite(path, tmp_path / "b.safetensors", mask_digest="0" * 64)
    with pytest.raises(ValueError, match="masks .* differ") as err:
        capaboost.load(tiny_roberta(), forged)
    assert "\n" not in str(err.value)
    old = _rewrite(path, tmp_path / "c.safetensors", format="capaboost/1")
    with pytest.raises(ValueError, match="capaboost/1"):
        capaboost.load(tiny_roberta(), old)


def test_load_refuses_missing_trainable_tensors(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    path = tmp_path / "a.safetensors"
    capaboost.save(_trained(CONFIGS["lora"], steps=1), path)
    headless = {k: v for k, v in load_file(str(path)).items() if "classifier" not in k}
    short = _rewrite(path, tmp_path / "b.safetensors", tensors=headless)
    target = capaboost.apply(tiny_roberta(), CONFIGS["lora"])
    before = {n: p.detach().clone() for n, p in target.named_parameters()}
    with pytest.raises(ValueError, match="missing from the file.*classifier"):
        capaboost.load(target, short)
    assert all(torch.equal(p, before[n]) for n, p in target.named_parameters())  # nothing loaded


def test_loads_files_that_say_seed(tmp_path: Path) -> None:
    """Files written before the rename store the mask seed as ``seed``."""
    import json

    path = tmp_path / "a.safetensors"
    model = _trained(CONFIGS["lora"], steps=1)
    capaboost.save(model, path)
    with safe_open(str(path), "pt") as f:
        cfg = json.loads(f.metadata()["config"])
    cfg["seed"] = cfg.pop("mask_seed")
    old = _rewrite(path, tmp_path / "b.safetensors", config=json.dumps(cfg))
    loaded = capaboost.load(tiny_roberta(), old).eval()
    assert loaded.capaboost_config.mask_seed == 3
    with torch.no_grad():
        assert torch.equal(loaded(**batch()).logits, model(**batch()).logits)


def test_wrapped_models(tmp_path: Path) -> None:
    """apply / save / load / merge look through torch.compile and DDP wrappers."""
    import torch.distributed as dist

    compiled = torch.compile(tiny_roberta())
    model = capaboost.apply(compiled, CONFIGS["lora"])
    assert model is compiled._orig_mod and lora_layers(model)
    randomize_lora_B(model)
    capaboost.save(torch.compile(model), tmp_path / "a.safetensors")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(capaboost.apply(tiny_roberta(), CONFIGS["lora"]))
        assert capaboost.load(ddp, tmp_path / "a.safetensors") is ddp.module
        with torch.no_grad():
            expected = model(**batch()).logits
            torch.testing.assert_close(ddp.module(**batch()).logits, expected)
            capaboost.merge(ddp)
            assert all(m.merged for m in lora_layers(ddp.module).values())
            torch.testing.assert_close(ddp.module(**batch()).logits, expected, atol=1e-5, rtol=0)
    finally:
        dist.destroy_process_group()


def test_export_peft_qv_slices_roundtrip(tmp_path: Path) -> None:
    """q and v slices of the ViT's fused qkv export as one PEFT LoRA of rank 2*d*r on qkv, zero on k."""
    from peft import PeftModel

    model = capaboost.apply(tiny_vit(), CapaBoostConfig(d=2, density=0.5, r=4, alpha=8))
    randomize_lora_B(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    capaboost.export_peft(model, tmp_path / "peft")
    loaded = PeftModel.from_pretrained(tiny_vit(), str(tmp_path / "peft")).eval()
    qkv = loaded.base_model.model.blocks[0].attn.qkv
    assert qkv.r["default"] == 2 * 2 * 4 and qkv.scaling["default"] == 8 / 4
    assert qkv.lora_B["default"].weight[32:64].abs().max() == 0
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, atol=1e-5, rtol=0)
