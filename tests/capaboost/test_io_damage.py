"""Damaged adapter files: one flipped byte inside a tensor, a truncated file, garbage. Each is refused
with one line naming the file, before the model is touched; an intact file and an older ``capaboost/2``
file without tensor hashes still load to the saved weights."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import capaboost
from capaboost import CapaBoostConfig
from tests.capaboost.tiny import batch, tiny_roberta

CFG = CapaBoostConfig(method="lora", d=2, density=0.5, r=4, alpha=8, mask_seed=3)


def _saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    model = capaboost.apply(tiny_roberta(), CFG)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    path = tmp_path / "adapter.safetensors"
    capaboost.save(model, path)
    return path, model.eval()


def _tensor_span(path: Path) -> tuple[str, int, int]:
    """(name, first byte, end) of the largest tensor's data in the file, read from its raw header."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    name = max((k for k in header if k != "__metadata__"),
               key=lambda k: header[k]["data_offsets"][1] - header[k]["data_offsets"][0])
    start, end = header[name]["data_offsets"]
    return name, 8 + n + start, 8 + n + end


def _assert_refused(path: Path, *words: str) -> None:
    target = tiny_roberta()
    before = {n: p.detach().clone() for n, p in target.named_parameters()}
    with pytest.raises(ValueError) as error:
        capaboost.load(target, path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message, message
    assert all(w in message for w in words), message
    assert not hasattr(target, "capaboost_config")   # nothing applied, nothing loaded
    assert all(torch.equal(p, before[n]) for n, p in target.named_parameters())


def test_one_flipped_byte_inside_a_tensor_is_refused(tmp_path):
    path, model = _saved(tmp_path)
    name, start, end = _tensor_span(path)
    raw = bytearray(path.read_bytes())
    raw[(start + end) // 2] ^= 0x01            # the lowest bit of one byte of one weight
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(raw))
    from safetensors.torch import load_file  # safetensors alone reads it without complaint
    assert not torch.equal(load_file(str(flipped))[name], load_file(str(path))[name])
    _assert_refused(flipped, "damaged", name, "sha256")
    loaded = capaboost.load(tiny_roberta(), path).eval()   # the intact file: the saved model
    with torch.no_grad():
        assert torch.equal(loaded(**batch()).logits, model(**batch()).logits)


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_file_is_refused_by_name(cut, tmp_path):
    path, _ = _saved(tmp_path)
    raw = path.read_bytes()
    short = tmp_path / "short.safetensors"
    short.write_bytes(raw[:int(len(raw) * cut)])
    _assert_refused(short)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"garbage, not a safetensors file at all" * 5,
                                     b"\xff" * 64])
def test_garbage_file_is_refused_by_name(content, tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    _assert_refused(path)


def test_older_capaboost2_file_without_hashes_still_loads(tmp_path):
    from safetensors.torch import load_file, save_file

    path, model = _saved(tmp_path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert set(json.loads(meta["sha256"])) == set(load_file(str(path)))
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={k: v for k, v in meta.items() if k != "sha256"})
    loaded = capaboost.load(tiny_roberta(), old).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**batch()).logits, model(**batch()).logits)
