"""SQuAD features for extractive QA and the way back from start/end logits to answer text.

Question first, context second, right padding; long contexts become several overlapping windows
(``stride`` tokens of overlap). Training windows that do not contain the whole answer -- and SQuAD 2.0's
unanswerable questions -- point both labels at position 0 (the CLS token for BERT-style tokenizers), which
is also where post-processing reads the "no answer" score, as in the HF QA examples the official code
ran. This follows the standard recipe, written from its description.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

NULL_INDEX = 0  # position whose start+end logits score "no answer"


def _tokenize(examples: Mapping[str, Sequence[Any]], tokenizer: Any, max_length: int, stride: int):
    if not 0 <= stride < max_length:
        raise ValueError(f"stride must be in [0, max_length), got stride={stride}, max_length={max_length}")
    questions = [q.lstrip() for q in examples["question"]]  # a few SQuAD questions start with long blanks
    return tokenizer(questions, list(examples["context"]), truncation="only_second", max_length=max_length,
                     stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                     padding="max_length", padding_side="right")


def _context_span(sequence_ids: list[int | None]) -> tuple[int, int]:
    if 1 not in sequence_ids:
        raise ValueError("a window holds no context token: the question alone fills max_length")
    start = sequence_ids.index(1)
    end = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
    return start, end


def _answer_positions(examples: Mapping[str, Sequence[Any]], enc: Any, sample_map: list[int],
                      offsets_all: list) -> tuple[list[int], list[int]]:
    """Start/end token of each window's answer, or NULL_INDEX when the window does not hold all of it."""
    starts, ends = [], []
    for i, offsets in enumerate(offsets_all):
        answers = examples["answers"][sample_map[i]]
        start_pos = end_pos = NULL_INDEX
        if len(answers["answer_start"]) > 0:
            char_start = answers["answer_start"][0]
            char_end = char_start + len(answers["text"][0])
            first, last = _context_span(enc.sequence_ids(i))
            if offsets[first][0] <= char_start and offsets[last][1] >= char_end:
                start_pos = first
                while start_pos <= last and offsets[start_pos][0] <= char_start:
                    start_pos += 1
                start_pos -= 1
                end_pos = last
                while end_pos >= first and offsets[end_pos][1] >= char_end:
                    end_pos -= 1
                end_pos += 1
        starts.append(start_pos)
        ends.append(end_pos)
    return starts, ends


def prepare_train_features(examples: Mapping[str, Sequence[Any]], tokenizer: Any, max_length: int = 384,
                           stride: int = 128) -> dict[str, list]:
    """Batched ``Dataset.map`` function: tokenised windows with start/end token labels."""
    enc = _tokenize(examples, tokenizer, max_length, stride)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets_all = enc.pop("offset_mapping")
    enc["start_positions"], enc["end_positions"] = _answer_positions(examples, enc, sample_map, offsets_all)
    return dict(enc)


def prepare_eval_features(examples: Mapping[str, Sequence[Any]], tokenizer: Any, max_length: int = 384,
                          stride: int = 128, labels: bool = False) -> dict[str, list]:
    """Batched ``Dataset.map`` function: windows plus ``example_id`` and context-only ``offset_mapping``;
    ``labels=True`` adds the training labels of the same windows (for an eval loss), in the same pass.

    Drop ``example_id`` and ``offset_mapping`` before the model's forward pass; keep them for
    ``postprocess_predictions``.
    """
    enc = _tokenize(examples, tokenizer, max_length, stride)
    sample_map = enc.pop("overflow_to_sample_mapping")
    if labels:
        enc["start_positions"], enc["end_positions"] = _answer_positions(examples, enc, sample_map,
                                                                         enc["offset_mapping"])
    enc["example_id"] = [examples["id"][j] for j in sample_map]
    enc["offset_mapping"] = [
        [tuple(o) if seq == 1 else None for o, seq in zip(offsets, enc.sequence_ids(i), strict=True)]
        for i, offsets in enumerate(enc["offset_mapping"])]
    return dict(enc)


def postprocess_predictions(examples: Any, features: Any, start_logits: Any, end_logits: Any,
                            n_best: int = 20, max_answer_length: int = 30, version_2: bool = False,
                            null_score_diff_threshold: float = 0.0) -> dict[str, str]:
    """Best span per example over all its windows; for v2, "" when the null score wins by the threshold."""
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    example_ids, offsets_all = list(features["example_id"]), list(features["offset_mapping"])
    if not len(example_ids) == len(start_logits) == len(end_logits):
        raise ValueError(f"{len(example_ids)} features but {len(start_logits)} start / "
                         f"{len(end_logits)} end logits")
    windows: dict[str, list[int]] = defaultdict(list)
    for i, example_id in enumerate(example_ids):
        windows[example_id].append(i)
    predictions: dict[str, str] = {}
    for example in examples:
        qid, context = example["id"], example["context"]
        if qid not in windows:
            raise ValueError(f"example {qid!r} has no features")
        best_text, best_score, null_score = None, -np.inf, np.inf
        for i in windows[qid]:
            s, e, offsets = start_logits[i], end_logits[i], offsets_all[i]
            null_score = min(null_score, float(s[NULL_INDEX] + e[NULL_INDEX]))
            top_ends = np.argsort(e)[::-1][:n_best]
            for a in np.argsort(s)[::-1][:n_best]:
                for b in top_ends:
                    if a >= len(offsets) or b >= len(offsets) or offsets[a] is None or offsets[b] is None:
                        continue
                    if b < a or b - a + 1 > max_answer_length:
                        continue
                    score = float(s[a] + e[b])
                    if score > best_score:
                        best_text, best_score = context[offsets[a][0]:offsets[b][1]], score
        if version_2 and (best_text is None or null_score - best_score > null_score_diff_threshold):
            predictions[qid] = ""
        else:
            predictions[qid] = best_text or ""
    return predictions
