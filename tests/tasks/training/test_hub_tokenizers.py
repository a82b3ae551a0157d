"""The hub tokenizers the paper's models ship, rebuilt small and offline in the hub's own file formats.

microsoft/deberta-v3-base ships config.json, spm.model and tokenizer_config.json only (no tokenizer.json):
transformers converts the SentencePiece model, which needs the ``sentencepiece`` package. roberta-base's
route is a byte-level BPE ``vocab.json`` + ``merges.txt``. Each stand-in is trained here on a few hundred
words and loaded through ``tasks.training.models.load_text``, the runner's own code path; the oracle is the
trainer
library's own encoder (sentencepiece, tokenizers), not our code.
"""
from __future__ import annotations

import io
import json
import random
import sys

import pytest

from tasks.training import models

WORDS = ("the cat sat on a mat while dog ran fast under blue sky question answer context model token piece "
         "train small local offline test data word sentence").split()
TEXT, PAIR = "the cat sat on a blue mat", "dog ran under the sky"
TINY_ARCH = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


def corpus(n: int = 200) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(n)]


@pytest.fixture(scope="module")
def deberta_dir(tmp_path_factory):
    """A microsoft/deberta-v3-base-shaped directory: its special-token ids, config keys and files."""
    import sentencepiece as spm
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    directory = tmp_path_factory.mktemp("deberta")
    proto = io.BytesIO()
    # DeBERTa-v3's spm.model: [PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=proto, vocab_size=60, model_type="unigram",
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]",
        unk_piece="[UNK]", user_defined_symbols=["[MASK]"], hard_vocab_limit=False, minloglevel=2)
    (directory / "spm.model").write_bytes(proto.getvalue())
    config = DebertaV2Config(vocab_size=64, max_position_embeddings=64, relative_attention=True,
                             position_buckets=16, pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm",
                             share_att_key=True, position_biased_input=False, type_vocab_size=0, **TINY_ARCH)
    DebertaV2ForSequenceClassification(config).save_pretrained(directory)
    tokenizer_config = {"do_lower_case": False, "vocab_type": "spm"}  # the hub file's whole content
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return directory, spm.SentencePieceProcessor(model_proto=proto.getvalue())


def test_deberta_v3_tokenizer_builds_from_spm_model_alone(deberta_dir):
    directory, sp = deberta_dir
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors", "spm.model",
                                                           "tokenizer_config.json"]
    model, tok = models.load_text({"kind": "hf", "hub_id": None, "path": str(directory)}, "seq_cls", 2)
    assert type(tok).__name__ == "DebertaV2Tokenizer" and model.config.model_type == "deberta-v2"
    cls, sep = sp.piece_to_id("[CLS]"), sp.piece_to_id("[SEP]")
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.unk_token_id) == (1, 2, 0, 3)
    assert tok(TEXT)["input_ids"] == [cls, *sp.encode(TEXT), sep]
    pair = tok(TEXT, PAIR, return_offsets_mapping=True)
    assert pair["input_ids"] == [cls, *sp.encode(TEXT), sep, *sp.encode(PAIR), sep]
    assert pair.sequence_ids().count(1) == len(sp.encode(PAIR))  # SQuAD's context span is findable
    out = model(**tok([TEXT], return_tensors="pt"))
    assert out.logits.shape == (1, 2)


def test_missing_sentencepiece_is_named(deberta_dir, monkeypatch):
    """The failure cluster users hit: no sentencepiece -> transformers' tiktoken fallback error."""
    directory, _ = deberta_dir
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import sentencepiece now raises ImportError
    with pytest.raises(ImportError, match="sentencepiece"):
        models.load_tokenizer(str(directory))


def test_roberta_tokenizer_builds_from_vocab_and_merges(tmp_path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForSequenceClassification

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(), vocab_size=300, min_frequency=1, show_progress=False,
                            special_tokens=list(models.SPECIALS))
    bpe.save_model(str(tmp_path))
    RobertaForSequenceClassification(RobertaConfig(
        vocab_size=bpe.get_vocab_size(), max_position_embeddings=66, type_vocab_size=1, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, **TINY_ARCH)).save_pretrained(tmp_path)
    assert {"vocab.json", "merges.txt", "config.json"} <= {p.name for p in tmp_path.iterdir()}
    model, tok = models.load_text({"kind": "hf", "hub_id": None, "path": str(tmp_path)}, "seq_cls", 2)
    assert type(tok).__name__ == "RobertaTokenizer"
    a, b = bpe.encode(TEXT).ids, bpe.encode(PAIR).ids  # roberta-base: no prefix space on either segment
    assert tok(TEXT)["input_ids"] == [0, *a, 2]
    assert tok(TEXT, PAIR)["input_ids"] == [0, *a, 2, 2, *b, 2]
    assert model(**tok([TEXT], return_tensors="pt")).logits.shape == (1, 2)
