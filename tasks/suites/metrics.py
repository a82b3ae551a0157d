"""GLUE and SQuAD metrics under the paper's names, as fractions in [0, 1] (tables multiply by 100).

GLUE follows the GLUE convention (sklearn/scipy, as HF ``evaluate``'s glue metric does); SQuAD follows
the official v1.1 and v2.0 evaluation scripts' normalisation and per-question max over gold answers.
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from tasks.facts.glue import GLUE


def _schema(task: str):
    if task not in GLUE:
        raise ValueError(f"task must be one of {sorted(GLUE)}, got {task!r}")
    return GLUE[task]


def _correlation(fn, x: np.ndarray, y: np.ndarray) -> float:
    """Undefined correlations (constant input) count as 0.0, like sklearn's MCC: selection stays ordered.
    Non-finite predictions are a diverged model, not a constant one: NaN, which stops the run
    (tasks.training.divergence) instead of scoring it 0."""
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    value = float(fn(x, y)[0])
    return 0.0 if math.isnan(value) else value


def glue_metrics(task: str, predictions: Any, labels: Any) -> dict[str, float]:
    """Metrics of one evaluation split. ``predictions``: class ids, or logits of shape (n, num_labels)."""
    schema = _schema(task)
    preds = np.asarray(predictions)
    gold = np.asarray(labels)
    if schema.is_regression:
        preds = preds.reshape(len(preds), -1)[:, 0] if preds.ndim > 1 else preds
        preds, gold = preds.astype(np.float64), gold.astype(np.float64)
    elif preds.ndim == 2:
        if preds.shape[1] != schema.num_labels:
            raise ValueError(f"{task}: logits have {preds.shape[1]} columns, expected {schema.num_labels}")
        preds = preds.argmax(axis=1)
    if preds.shape != gold.shape:
        raise ValueError(f"{task}: {preds.shape[0]} predictions for {gold.shape[0]} labels")
    if len(gold) == 0:
        raise ValueError(f"{task}: no examples to score")
    out: dict[str, float] = {}
    for name in schema.metrics:
        if name == "mcc":
            out[name] = float(matthews_corrcoef(gold, preds))
        elif name == "accuracy":
            out[name] = float(accuracy_score(gold, preds))
        elif name == "f1":
            out[name] = float(f1_score(gold, preds, pos_label=1, average="binary", zero_division=0.0))
        elif name == "pearson":
            out[name] = _correlation(pearsonr, preds, gold)
        elif name == "spearman":
            out[name] = _correlation(spearmanr, preds, gold)
        else:  # pragma: no cover - the schema only names the metrics above
            raise ValueError(f"unknown GLUE metric {name!r}")
    return out


def selection_score(task: str, metrics: Mapping[str, float]) -> float:
    """The official best-epoch criterion (tasks.facts.glue): CoLA MCC; STS-B mean(P, S); MRPC/QQP
    mean(acc, F1); else acc."""
    try:
        return _schema(task).selection.score(metrics)
    except ValueError as error:
        raise ValueError(f"{task}: {error}") from None


def vtab_metrics(predictions: Any, labels: Any) -> dict[str, float]:
    """Top-1 accuracy (VTAB-1k's only metric). ``predictions``: class ids or logits of shape (n, classes)."""
    preds, gold = np.asarray(predictions), np.asarray(labels)
    preds = preds.argmax(axis=1) if preds.ndim == 2 else preds
    if preds.shape != gold.shape or len(gold) == 0:
        raise ValueError(f"vtab: {preds.shape} predictions for {gold.shape} labels")
    return {"accuracy": float(accuracy_score(gold, preds))}


# --- SQuAD -------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace (official scripts)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _exact(gold: str, pred: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(pred))


def _f1(gold: str, pred: str, version_2: bool) -> float:
    gold_toks, pred_toks = normalize_answer(gold).split(), normalize_answer(pred).split()
    if version_2 and (not gold_toks or not pred_toks):
        return float(gold_toks == pred_toks)  # v2.0: no-answer matches only no-answer
    same = sum((Counter(gold_toks) & Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _gold_texts(answers: Any, version_2: bool) -> list[str]:
    texts = answers["text"] if isinstance(answers, Mapping) else [
        a["text"] if isinstance(a, Mapping) else a for a in answers]
    texts = [str(t) for t in texts]
    if version_2:  # v2.0 script: drop golds that normalise to "", and an empty list means "no answer"
        texts = [t for t in texts if normalize_answer(t)] or [""]
    return texts


def squad_metrics(predictions: Mapping[str, str], references: Iterable[Mapping[str, Any]],
                  version_2: bool) -> dict[str, float]:
    """EM and F1 (fractions); for v2 also HasAns_/NoAns_ breakdowns. Every reference id needs a prediction."""
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    has_answer: dict[str, bool] = {}
    missing = []
    for ref in references:
        qid = ref["id"]
        if qid not in predictions:
            missing.append(qid)
            continue
        golds = _gold_texts(ref["answers"], version_2)
        if not golds:  # v1 reference without answers: unscorable, as in the official v1.1 data
            raise ValueError(f"squad reference {qid!r} has no gold answer (use version_2=True for SQuAD 2.0)")
        pred = predictions[qid]
        exact[qid] = max(_exact(g, pred) for g in golds)
        f1[qid] = max(_f1(g, pred, version_2) for g in golds)
        has_answer[qid] = golds != [""]
    if missing:
        raise ValueError(f"{len(missing)} references have no prediction, e.g. {missing[:3]}")
    if not exact:
        raise ValueError("no references to score")
    out = {"exact_match": float(np.mean(list(exact.values()))), "f1": float(np.mean(list(f1.values())))}
    if version_2:
        for prefix, wanted in (("HasAns", True), ("NoAns", False)):
            ids = [q for q, h in has_answer.items() if h == wanted]
            if ids:
                out[f"{prefix}_exact_match"] = float(np.mean([exact[q] for q in ids]))
                out[f"{prefix}_f1"] = float(np.mean([f1[q] for q in ids]))
    return out


# --- GSM8K (PEFT's MetaMathQA benchmark) ------------------------------------------------------------

MATH_DELIMITERS = ("The answer is: ", "The answer is ", "The final answer is: ", "The final answer is ",
                   "#### ")  # MetaMathQA's four, then GSM8K's (peft utils.py:412-420)


def math_answer(text: str, lenient: bool = False) -> float | str | None:
    """The answer rule of PEFT's benchmark (huggingface/peft@5d602fdb, method_comparison/MetaMathQA/
    utils.py:399-507), for model outputs and gold answers alike.

    The text (stripped, trailing ``.!?`` removed) is cut after the LAST occurrence of the FIRST delimiter
    of MATH_DELIMITERS it contains, at the first newline, and stripped of `` .!?$%``; that is a number if
    Decimal reads it (``a/b`` divided out, commas not allowed) and compared as a float, else a string;
    no delimiter: None (wrong). ``lenient`` (switch lenient_answers) also drops thousands commas.
    """
    from decimal import Decimal, DivisionByZero, InvalidOperation

    text = text.strip().rstrip(".!?")
    delimiter = next((d for d in MATH_DELIMITERS if d in text), None)
    if delimiter is None:
        return None
    answer = text.rpartition(delimiter)[-1].strip().split("\n", 1)[0].strip(" .!?$%")
    number = answer.replace(",", "") if lenient else answer
    try:
        if "/" in number:
            parts = number.split("/")
            if len(parts) != 2:
                return answer
            numerator, denominator = Decimal(parts[0].strip()), Decimal(parts[1].strip())
            return answer if denominator == 0 else float(numerator / denominator)
        return float(Decimal(number.strip()))
    except (DivisionByZero, InvalidOperation, ValueError):
        return answer


def math_accuracy(predictions: list[str], golds: list[str], lenient: bool = False) -> float:
    """Fraction of outputs whose answer equals the gold answer's (peft utils.py:468-507); a gold answer
    without a delimiter is a data error, as there."""
    if len(predictions) != len(golds) or not golds:
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold answers")
    correct = 0
    for prediction, gold in zip(predictions, golds, strict=True):
        want = math_answer(gold, lenient)
        if want is None:
            raise ValueError(f"gold answer has no answer delimiter: {gold[-80:]!r}")
        got = math_answer(prediction, lenient)
        correct += got is not None and got == want
    return correct / len(golds)
