"""Small deterministic synthetic data with each task's real schema, for offline CPU runs and tests.

Each builder returns what the hub (or the VTAB image-list folder) would give -- same split names, columns
and features -- so fixtures go through exactly the protocol code real data goes through
(``tasks.data.load``). Labels carry a learnable signal (a class keyword, a class-specific image pattern), so a
tiny model can beat chance within a few steps. Everything is a pure function of its arguments: no clock,
no global RNG.
"""
from __future__ import annotations

import zlib
from functools import cache

import datasets
import numpy as np
from PIL import Image

from tasks.data import features as hub_features
from tasks.facts.glue import GLUE
from tasks.facts.squad import VERSIONS as SQUAD_VERSIONS
from tasks.facts.vtab import VTAB

N_TRAIN, N_DEV = 64, 32
N_SQUAD_TRAIN, N_SQUAD_DEV = 48, 24
N_VTAB = {"train800": 32, "val200": 16, "test": 32}
IMAGE_SIZE = 32

_FILLER = {
    "matched": ("the", "cat", "sat", "on", "a", "mat", "while", "dog", "ran", "across", "green", "field",
                "people", "often", "say", "that", "morning", "light", "feels", "calm", "near", "old", "river",
                "children", "played", "with", "red", "ball", "after", "school", "and", "then",
                "went", "home"),
    "mismatched": ("engineers", "designed", "bridge", "over", "valley", "using", "steel", "cables", "report",
                   "claims", "market", "prices", "rose", "sharply", "during", "winter", "telephone", "call",
                   "lasted", "minutes", "letter", "arrived", "late", "from", "office", "in", "capital"),
}
# One keyword per class (index = label id); STS-B uses one word per integer score bucket 0..5.
_KEYWORDS = {
    "cola": ("wrongly", "rightly"), "sst2": ("terrible", "wonderful"), "mrpc": ("different", "same"),
    "qqp": ("unrelated", "duplicate"), "mnli": ("certainly", "perhaps", "never"),
    "qnli": ("answers", "ignores"), "rte": ("follows", "contradicts"),
    "stsb": ("zero", "one", "two", "three", "four", "five"),
}


def _rng(*parts: object) -> np.random.Generator:
    """A generator seeded from the names involved, so every split is reproducible on its own."""
    return np.random.default_rng(zlib.crc32("/".join(map(str, parts)).encode()))


def _sentence(rng: np.random.Generator, pool: tuple[str, ...], keyword: str | None = None) -> str:
    words = [str(w) for w in rng.choice(pool, size=int(rng.integers(5, 10)))]
    if keyword is not None:
        words.insert(int(rng.integers(0, len(words) + 1)), keyword)
    return " ".join(words)


def _glue_split(task: str, split: str, n: int, genre: str) -> datasets.Dataset:
    schema = GLUE[task]
    rng = _rng("glue", task, split)
    pool, keywords = _FILLER[genre], _KEYWORDS[task]
    first, second = schema.keys
    rows: dict[str, list] = {key: [] for key in schema.keys if key is not None}
    rows.update(label=[], idx=list(range(n)))
    for i in range(n):
        if schema.is_regression:
            bucket = i % len(keywords)
            label: float | int = float(np.clip(bucket + rng.uniform(-0.4, 0.4), 0.0, 5.0))
        else:
            bucket = label = i % schema.num_labels
        keyword = keywords[bucket]
        if second is None:
            rows[first].append(_sentence(rng, pool, keyword))
        else:
            rows[first].append(_sentence(rng, pool))
            rows[second].append(_sentence(rng, pool, keyword))
        rows["label"].append(label)
    order = rng.permutation(n)  # labels interleaved but not periodic
    rows = {k: [v[j] for j in order] if k != "idx" else v for k, v in rows.items()}
    return datasets.Dataset.from_dict(rows, features=hub_features.glue(task))


@cache
def glue_raw(task: str, n_train: int = N_TRAIN, n_dev: int = N_DEV) -> datasets.DatasetDict:
    """What ``load_dataset("nyu-mll/glue", task)`` gives, minus the unlabeled test splits."""
    if task not in GLUE:
        raise ValueError(f"task must be one of {sorted(GLUE)}, got {task!r}")
    splits = {"train": _glue_split(task, "train", n_train, "matched")}
    for name in GLUE[task].dev_splits:
        genre = "mismatched" if name.endswith("mismatched") else "matched"
        splits[name] = _glue_split(task, name, n_dev, genre)
    return datasets.DatasetDict(splits)


# --- SQuAD ---------------------------------------------------------------------------------------------

_ENTITIES = ("museum", "library", "observatory", "academy", "harbour", "stadium", "theatre", "hospital")
_PEOPLE = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Emmy Noether", "Niels Bohr", "Marie Curie")
_CITIES = ("Paris", "Lisbon", "Oslo", "Vienna", "Dublin", "Prague", "Madrid", "Warsaw")
_COLOURS = ("red", "blue", "white", "yellow", "grey")
# (fact sentence, question, answer slot); the slot text appears exactly once in the fact sentence.
_FACTS = (
    ("The {e} was founded in {year} by {person}.", "When was the {e} founded?", "year"),
    ("The {e} was founded in {year} by {person}.", "Who founded the {e}?", "person"),
    ("Today the {e} stands in the centre of {city}.", "In which city is the {e}?", "city"),
    ("Its main hall is painted {colour} every spring.", "What colour is the main hall of the {e}?", "colour"),
)
_UNANSWERABLE = ("Who destroyed the {e}?", "How many visitors did the {e} have last year?")
_PADDING = ("Visitors often arrive early in the morning.", "Many guides explain its long history.",
            "Nearby streets are busy on weekends.", "Local schools organise trips there each term.")


def _squad_split(version: str, split: str, n: int) -> datasets.Dataset:
    rng = _rng("squad", version, split)
    rows: dict[str, list] = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    for i in range(n):
        slots = {"e": str(rng.choice(_ENTITIES)), "year": str(int(rng.integers(1700, 2000))),
                 "person": str(rng.choice(_PEOPLE)), "city": str(rng.choice(_CITIES)),
                 "colour": str(rng.choice(_COLOURS))}
        fact, question, slot = _FACTS[int(rng.integers(len(_FACTS)))]
        sentences = [str(s) for s in rng.choice(_PADDING, size=int(rng.integers(1, 5)), replace=False)]
        position = int(rng.integers(0, len(sentences) + 1))
        sentences.insert(position, fact.format(**slots))
        context = " ".join(sentences)
        fact_start = len(" ".join(sentences[:position])) + (1 if position else 0)
        unanswerable = version == "v2" and i % 3 == 2
        if unanswerable:
            question = str(rng.choice(_UNANSWERABLE))
            answers = {"text": [], "answer_start": []}
        else:
            text = slots[slot]
            start = fact_start + fact.format(**slots).index(text)
            answers = {"text": [text], "answer_start": [start]}
            if split == "validation":  # the hub's dev sets list several annotators' answers
                answers = {"text": [text, text], "answer_start": [start, start]}
        rows["id"].append(f"{version}-{split}-{i:04d}")
        rows["title"].append(slots["e"].capitalize())
        rows["context"].append(context)
        rows["question"].append(question.format(**slots))
        rows["answers"].append(answers)
    return datasets.Dataset.from_dict(rows, features=hub_features.squad())


@cache
def squad_raw(version: str, n_train: int = N_SQUAD_TRAIN, n_dev: int = N_SQUAD_DEV) -> datasets.DatasetDict:
    """What ``load_dataset("rajpurkar/squad" | "rajpurkar/squad_v2")`` gives: train and validation."""
    if version not in SQUAD_VERSIONS:
        raise ValueError(f"version must be one of {SQUAD_VERSIONS}, got {version!r}")
    return datasets.DatasetDict({"train": _squad_split(version, "train", n_train),
                                 "validation": _squad_split(version, "validation", n_dev)})


# --- VTAB ----------------------------------------------------------------------------------------------

def vtab_image(label: int, num_classes: int, rng: np.random.Generator) -> Image.Image:
    """A 32x32 RGB image whose colour and bright-square position encode the label, plus noise."""
    base = _rng("vtab-class", label).integers(0, 256, size=3)
    pixels = np.tile(base, (IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.int16)
    cell = IMAGE_SIZE // 4
    row, col = (label // 4) % 4, label % 4
    pixels[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] = 255 - base
    pixels += rng.integers(-20, 21, size=pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def _vtab_split(name: str, split: str, n: int) -> datasets.Dataset:
    num_classes = VTAB[name].num_classes
    rng = _rng("vtab", name, split)
    labels = [int(x) for x in rng.permutation(np.arange(n) % num_classes)]
    images = [vtab_image(label, num_classes, rng) for label in labels]
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=hub_features.vtab(name))


@cache
def vtab_raw(name: str) -> datasets.DatasetDict:
    """The four image lists of one VTAB-1k folder (train800val200 = train800 + val200, as released)."""
    if name not in VTAB:
        raise ValueError(f"VTAB name must be one of {sorted(VTAB)}, got {name!r}")
    train = _vtab_split(name, "train800", N_VTAB["train800"])
    val = _vtab_split(name, "val200", N_VTAB["val200"])
    return datasets.DatasetDict({"train800": train, "val200": val,
                                 "train800val200": datasets.concatenate_datasets([train, val]),
                                 "test": _vtab_split(name, "test", N_VTAB["test"])})


def all_texts() -> list[str]:
    """Every string the text fixtures contain, so a runner can build a tokenizer vocabulary offline."""
    texts: list[str] = []
    for task, schema in GLUE.items():
        for split in glue_raw(task).values():
            for key in schema.keys:
                if key is not None:
                    texts.extend(split[key])
    for version in SQUAD_VERSIONS:
        for split in squad_raw(version).values():
            texts.extend(split["question"])
            texts.extend(split["context"])
    return texts


# --- MetaMathQA / GSM8K (PEFT's decoder benchmark) ----------------------------------------------------

N_METAMATH, N_GSM8K_TRAIN, N_GSM8K_TEST = 96, 64, 24
_ITEMS = ("apples", "pencils", "marbles", "books", "stickers", "coins")
_MATH_TYPES = ("GSM_Rephrased", "GSM_AnsAug", "MATH_AnsAug", "GSM_SV", "GSM_FOBAR", "MATH_Rephrased")


def _word_problem(rng: np.random.Generator) -> tuple[str, int, int, str]:
    a, b = int(rng.integers(2, 60)), int(rng.integers(2, 60))
    item = str(rng.choice(_ITEMS))
    return f"Sam has {a} {item} and buys {b} more. How many {item} does Sam have now?", a, b, item


def metamathqa_split(n: int = N_METAMATH) -> datasets.Dataset:
    """Rows shaped like meta-math/MetaMathQA "train": query, response ending in "The answer is: n",
    type, original_question. Every 16th response is padded past the 1,300-character filter."""
    rng = _rng("metamathqa", "train")
    rows: dict[str, list] = {"type": [], "query": [], "original_question": [], "response": []}
    for i in range(n):
        query, a, b, item = _word_problem(rng)
        steps = f"Sam starts with {a} {item}. After buying {b} more, Sam has {a} + {b} = {a + b} {item}."
        if i % 16 == 15:
            steps += " Let us check the sum once more." * 45  # > 1,300 characters: filtered out
        rows["type"].append(_MATH_TYPES[i % len(_MATH_TYPES)])
        rows["query"].append(query)
        rows["original_question"].append(query)
        rows["response"].append(f"{steps}\nThe answer is: {a + b}")
    return datasets.Dataset.from_dict(rows, features=datasets.Features(
        {k: datasets.Value("string") for k in rows}))


def _gsm8k_split(split: str, n: int) -> datasets.Dataset:
    rng = _rng("gsm8k", split)
    rows: dict[str, list] = {"question": [], "answer": []}
    for _ in range(n):
        query, a, b, item = _word_problem(rng)
        rows["question"].append(query)
        rows["answer"].append(f"Sam has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {item}.\n#### {a + b}")
    return datasets.Dataset.from_dict(rows, features=datasets.Features(
        {k: datasets.Value("string") for k in rows}))


@cache
def metamathqa_raw() -> datasets.DatasetDict:
    """What ``load_dataset("meta-math/MetaMathQA")`` gives: one "train" split."""
    return datasets.DatasetDict({"train": metamathqa_split()})


@cache
def gsm8k_raw() -> datasets.DatasetDict:
    """What ``load_dataset("openai/gsm8k", "main")`` gives: train and test, question / answer."""
    return datasets.DatasetDict({"train": _gsm8k_split("train", N_GSM8K_TRAIN),
                                 "test": _gsm8k_split("test", N_GSM8K_TEST)})
