"""Decoder backbones through the harness: run.py on tiny-llama / tiny-gpt2, refusals at config time,
pad token, frozen-weight dtypes, gradient checkpointing (same numbers), make tables, preflight."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from runs import ROOT, run, spec_for
from test_cli import ENV, PROBE

# tiny decoders (hidden 32, 2 layers, r=4): q and v LoRA, 2 x r x (32 + 32) per layer; head 32 -> 2, no bias
LORA, HEAD = 2 * 2 * 4 * (32 + 32), 32 * 2


def test_the_issue_command_writes_result_json(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "run.py", "task=glue/rte", "peft=capaboost_lora",
                           "model=tiny-llama", "data=fixture", "logger=none", "trainer.progress=false",
                           "trainer.max_steps=2", f"runs_root={tmp_path}"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    assert (result["model"], result["peft"], result["d"], result["global_step"]) == \
        ("tiny-llama", "capaboost_lora", 2, 2)
    assert result["params"]["trainable"] == LORA + HEAD
    assert result["params"]["peft"] < LORA and result["rank"]["max"] == 8  # d * r


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2"])
def test_decoders_train_and_tables_print_their_rows(model: str, tmp_path: Path) -> None:
    for peft in ("lora", "capaboost_lora"):
        result = run([f"model={model}", "task=glue/rte", f"peft={peft}", "trainer.max_steps=2"], tmp_path)
        assert result["params"]["trainable"] == LORA + HEAD, peft
        assert result["rank"]["max"] == (4 if peft == "lora" else 8)
    proc = subprocess.run([sys.executable, "scripts/make_tables.py", "--runs", str(tmp_path), "--out",
                           str(tmp_path / "out"), "--no-figures"], cwd=ROOT, env=ENV, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = next((tmp_path / "out" / "tables").glob(f"glue_{model.replace('-', '_')}-*runs.md")).read_text()
    assert "| LoRA |" in table and "| CapaBoost-LoRA (d=2, density=0.5) |" in table


@pytest.mark.parametrize("args, key", [
    (["peft=capaboost_padapter"], "method 'padapter' is not supported on model=tiny-llama"),
    (["peft=capaboost_prefix"], "method 'prefix' is not supported on model=tiny-llama"),
    (["peft=capaboost_padapter", "model=tiny-gpt2"], "method 'padapter' is not supported on model=tiny-gpt2"),
    (["task=vtab/cifar", "model=tiny", "trainer.gradient_checkpointing=true"],
     "trainer.gradient_checkpointing"),
])
def test_refused_in_one_line_before_torch(args: list[str], key: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, "task=glue/rte", "model=tiny-llama", "data=fixture",
                           "logger=none", f"runs_root={tmp_path}", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and key in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "TORCH_NOT_IMPORTED" in proc.stdout and not list(tmp_path.iterdir())


def test_gradient_checkpointing_changes_no_number(tmp_path: Path) -> None:
    """Recomputing activations is execution only: same losses, same metrics, same run identity."""
    over = ["model=tiny-llama", "task=glue/rte", "peft=capaboost_lora", "trainer.max_steps=3"]
    plain = run(over, tmp_path / "a")
    checkpointed = run([*over, "trainer.gradient_checkpointing=true"], tmp_path / "b")
    assert plain["identity_key"] == checkpointed["identity_key"]
    for a, b in zip(plain["history"], checkpointed["history"], strict=True):
        assert a["report"]["loss"] == pytest.approx(b["report"]["loss"], rel=1e-5)


def test_pad_token_and_no_cache_for_classification() -> None:
    """A decoder tokenizer without a pad token pads with eos, and the model pools on that id."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from tasks.training.models import build_word_tokenizer, for_classification

    tok = build_word_tokenizer(["a b c d"], 50)
    tok.pad_token = None
    model = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32))
    assert model.config.pad_token_id is None and model.config.use_cache
    model, tok = for_classification(model, tok)
    assert tok.pad_token == "</s>" and model.config.pad_token_id == tok.eos_token_id
    assert not model.config.use_cache
    enc = tok(["a b c d", "a"], padding=True, return_tensors="pt")
    with torch.no_grad():  # row 2 is classified at its own last token (right padding ignored)
        short = model(**tok(["a"], return_tensors="pt")).logits[0]
        torch.testing.assert_close(model(**enc).logits[1], short, atol=1e-5, rtol=0)


def test_frozen_weights_dtype() -> None:
    """Decoders in bf16: frozen weights bf16, trained ones fp32; encoders and fp32 runs: all fp32."""
    import capaboost
    from capaboost.backbones import BACKBONES
    from tasks.training.models import ready_for_training
    from tests.capaboost.tiny import tiny_llama, tiny_roberta

    for build, backbone in ((tiny_llama, "llama"), (tiny_roberta, "roberta")):
        for precision in ("bf16", "fp32"):
            model = capaboost.apply(build().to(torch.bfloat16), capaboost.CapaBoostConfig(r=4))
            ready_for_training(model, backbone, precision)
            frozen = torch.bfloat16 if BACKBONES[backbone].decoder and precision == "bf16" else torch.float32
            assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
            assert {p.dtype for p in model.parameters() if not p.requires_grad} == {frozen}


def test_preflight_counts_and_real_sizes(tmp_path: Path) -> None:
    """preflight builds tiny-llama as the runner does (same PEFT counts) and the real checkpoints at
    their published sizes (the hub's safetensors parameter counts: frozen = the backbone)."""
    from preflight.build import build

    spec = spec_for(["model=tiny-llama", "task=glue/rte", "peft=capaboost_lora"], tmp_path)
    assert build(spec, "bf16").counts["trainable"] == LORA + HEAD
    for model, backbone in (("qwen2.5-0.5b", 494_032_768), ("llama-3.2-3b", 3_212_749_824)):
        spec = spec_for([f"model={model}", "task=glue/rte", "peft=lora"], tmp_path, tiny=False)
        built = build(spec, "bf16")
        assert built.counts["total"] - built.counts["trainable"] == backbone
        frozen = {p.dtype for p in built.model.parameters() if not p.requires_grad}
        assert frozen == {torch.bfloat16}
