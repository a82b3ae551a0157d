"""Tiny random-init models of every supported family (hidden 32, 2 layers): seconds on a CPU, no hub."""
from __future__ import annotations

import torch
from torch import nn

HIDDEN, LAYERS, VOCAB, LABELS = 32, 2, 100, 3


def _text_kwargs(dropout: float) -> dict:
    return dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                intermediate_size=2 * HIDDEN, max_position_embeddings=64, num_labels=LABELS,
                hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


def tiny_roberta(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(seed)
    return RobertaForSequenceClassification(RobertaConfig(**_text_kwargs(dropout))).eval()


def tiny_bert(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(**_text_kwargs(dropout))).eval()


def tiny_deberta(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    """DeBERTa-v2/v3 style: relative attention with c2p/p2c, no absolute positions."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    torch.manual_seed(seed)
    cfg = DebertaV2Config(**_text_kwargs(dropout), relative_attention=True, position_buckets=16,
                          max_relative_positions=64, pos_att_type=["p2c", "c2p"],
                          position_biased_input=False, pooler_hidden_size=HIDDEN)
    return DebertaV2ForSequenceClassification(cfg).eval()


def tiny_vit(seed: int = 0) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=HIDDEN, depth=LAYERS, num_heads=2,
                             num_classes=LABELS).eval()


PAD = 0  # the decoders' pad id: they classify from the last token that is not PAD


def tiny_llama(seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    return LlamaForSequenceClassification(LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=2 * HIDDEN, max_position_embeddings=64, num_labels=LABELS,
        pad_token_id=PAD, use_cache=False)).eval()


def tiny_gpt2(seed: int = 0) -> nn.Module:
    """GPT-2: attention's c_attn is one Conv1D (weight [in, 3*hidden]) giving [q; k; v]."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    return GPT2ForSequenceClassification(GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=2, n_positions=64, num_labels=LABELS,
        pad_token_id=PAD, bos_token_id=1, eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        use_cache=False)).eval()


def decoder_batch(seed: int = 1, n: int = 4, length: int = 12) -> dict[str, torch.Tensor]:
    """``batch`` with the padded tail set to PAD: a decoder pools each row's last non-pad token."""
    out = batch(seed, n, length)
    out["input_ids"][out["attention_mask"] == 0] = PAD
    return out


TEXT_MODELS = {"roberta": tiny_roberta, "bert": tiny_bert, "deberta-v2": tiny_deberta}


def batch(seed: int = 1, n: int = 4, length: int = 12) -> dict[str, torch.Tensor]:
    """Token ids with a padded tail in the last row, so attention masks matter."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, length // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def labels(seed: int = 2, n: int = 4) -> torch.Tensor:
    return torch.randint(0, LABELS, (n,), generator=torch.Generator().manual_seed(seed))


def images(seed: int = 1, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def logits(model: nn.Module, inputs) -> torch.Tensor:
    """Classification logits of a transformers model (dict inputs) or a timm ViT (image tensor)."""
    return model(inputs) if isinstance(inputs, torch.Tensor) else model(**inputs).logits


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if hasattr(m, "mask_A") and hasattr(m, "lora_A")}


def randomize_lora_B(model: nn.Module, std: float = 0.1, seed: int = 3) -> None:
    """LoRA B starts at zero; a nonzero B makes every check see the adapter's contribution."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in sorted(lora_layers(model).items()):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g, dtype=layer.lora_B.dtype) * std)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def one_step_changes(model: nn.Module) -> set[str]:
    """Names of the parameters one AdamW step on a tiny classification batch actually changes."""
    import torch.nn.functional as F

    before = snapshot(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    F.cross_entropy(model(**batch()).logits, labels()).backward()
    opt.step()
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def logits_pair(a: nn.Module, b: nn.Module, train: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both models' logits on one batch, each under the same dropout RNG state."""
    a.train(train)
    b.train(train)
    inputs = batch()
    torch.manual_seed(seed)
    y_a = a(**inputs).logits
    torch.manual_seed(seed)
    return y_a, b(**inputs).logits
