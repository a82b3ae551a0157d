"""PEFT's decoder benchmark (huggingface/peft, method_comparison/MetaMathQA) as this task's facts.

Train on MetaMathQA, validate on 50 GSM8K train questions, test on the whole GSM8K test split, scoring
generated answers. Every value below is what PEFT's code does, with the file and line it was read from
at commit 5d602fdb (2026-08-21) of huggingface/peft, folder method_comparison/MetaMathQA/ (``data.py``,
``run.py``, ``utils.py``, ``default_training_params.json`` = ``defaults.json`` below). Trainer values
(lr, batch, steps, ...) flow through the harness's own keys and are set, with the same sources, in
conf/family/math.yaml. Departures we would choose are named switches, all off by default (SWITCHES).

Torch-free except ``bucket_order`` (it must sort exactly as PEFT's ``torch.argsort`` does).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.facts.common import Selection, Suite

SOURCE = "huggingface/peft@5d602fdb method_comparison/MetaMathQA"
METAMATHQA_HUB_ID = "meta-math/MetaMathQA"          # data.py:61, split "train"
GSM8K_HUB_ID, GSM8K_CONFIG = "openai/gsm8k", "main"  # data.py:65; valid from "train", test = "test" (:67-77)
METAMATHQA_COLUMNS = ("query", "response", "type")   # the hub's columns we read (also original_question)
GSM8K_COLUMNS = ("question", "answer")               # answer ends in "#### <n>"
# data.path=<dir>: save_to_disk copies of both datasets in one of these sub-folders each
LOCAL_FOLDERS = {"metamathqa": ("metamathqa", "MetaMathQA"), "gsm8k": ("gsm8k", "GSM8K")}


def local_problem(root: str) -> str | None:
    """None, or why ``root`` is not a data.path for this task (checked before anything heavy)."""
    from pathlib import Path

    for name, folders in LOCAL_FOLDERS.items():
        if not any((Path(root) / f / "dataset_dict.json").is_file() for f in folders):
            return (f"data.path={root!r} lacks a save_to_disk DatasetDict for {name} (looked in "
                    f"{' and '.join(f + '/' for f in folders)}); make one with datasets.load_dataset(...)"
                    f".save_to_disk('{root}/{folders[0]}')")
    return None


@dataclass(frozen=True)
class Protocol:
    char_limit: int = 1300          # data.py:29, filter at :43-44: keep len(f"{query} {response}") <= 1300
    valid_size: int = 50            # data.py:32; the first 50 of np.random.seed(0) shuffle (:70-73)
    valid_seed: int = 0             # data.py:70
    template: str = "Question: {query} Think step by step.\nAnswer:"  # defaults.json:26
    bucket_factor: int = 20         # run.py:63; buckets of batch_size * 20 = 80 (utils.py:346)
    max_length: int = 800           # defaults.json:23 (generation)
    max_new_tokens: int = 300       # defaults.json:24; combined as min(300 + padded prompt, 800): run.py:77
    weights_dtype: str = "bfloat16"  # defaults.json:3; no AMP (defaults.json:19), adapters kept in fp32
    #                                 (autocast_adapter_dtype, defaults.json:20)
    hub_model: str = "meta-llama/Llama-3.2-3B"  # defaults.json:2


PROTOCOL = Protocol()
# Rows each split holds: train = MetaMathQA's 395,000 after the length filter (93.8% kept, data.py:27-28:
# ~370,510, approximate; a run reads 5,000 x 4 = 20,000 of them); select = the 50 validation questions
# (Protocol.valid_size); report = the GSM8K test split. What preflight's costs count.
TRAIN_ROWS, TEST_ROWS = 370_510, 1_319
SUITE = Suite(family="math", modality="text", tasks=("gsm8k",), main_metric={"gsm8k": "accuracy"},
              selection={"gsm8k": Selection(("accuracy",))}, protocols=("peft_metamathqa",),
              protocol="peft_metamathqa", report_rules=("final_epoch",), head="causal")
# Named departures from PEFT's protocol (task.switches.<name>=true); off: PEFT's behaviour.
SWITCHES = {
    "loss_on_response_only": "labels -100 over the prompt too (PEFT: loss on prompt and response)",
    "shuffle_train": "random order instead of PEFT's unshuffled length buckets",
    "lenient_answers": "drop thousands commas before comparing numbers (PEFT: '1,000' != '1000')",
    "greedy": "force do_sample=False (PEFT passes GenerationConfig(max_length=...) only, so transformers "
              "fills every other field from the checkpoint's generation_config.json)",
}


def prompt(query: str, protocol: Protocol = PROTOCOL) -> str:
    """The question as the model sees it (defaults.json:26); training appends the response directly
    (data.py:93, no separator)."""
    return protocol.template.format(query=query)


def keep_indices(queries: Sequence[str], responses: Sequence[str],
                 protocol: Protocol = PROTOCOL) -> list[int]:
    """MetaMathQA rows kept for training (data.py:43-44): 93.8% of the hub's train split."""
    return [i for i, (q, r) in enumerate(zip(queries, responses, strict=True))
            if len(f"{q} {r}") <= protocol.char_limit]


def valid_indices(n_train: int, protocol: Protocol = PROTOCOL) -> list[int]:
    """GSM8K train rows used for validation (data.py:70-73): the legacy global numpy RNG, as PEFT does;
    its state is saved and restored so nothing else's randomness moves."""
    state = np.random.get_state()
    try:
        np.random.seed(protocol.valid_seed)
        order = np.arange(n_train)
        np.random.shuffle(order)
    finally:
        np.random.set_state(state)
    return [int(i) for i in order[:protocol.valid_size]]


def bucket_order(lengths: Sequence[int], batch_size: int, protocol: Protocol = PROTOCOL) -> list[int]:
    """Training order of PEFT's BucketIterator (utils.py:311-355): the unshuffled data in buckets of
    ``batch_size * bucket_factor``, each sorted longest first with ``torch.argsort(descending=True)``
    (utils.py:337); a partial last bucket is yielded twice, as there (utils.py:348-355)."""
    import torch

    size, n = batch_size * protocol.bucket_factor, len(lengths)
    starts = list(range(0, n, size))
    buckets = [list(range(s, min(s + size, n))) for s in starts]
    if n % size:
        buckets.append(list(range(n - n % size, n)))
    order: list[int] = []
    for bucket in buckets:
        ranks = torch.argsort(torch.tensor([lengths[i] for i in bucket]), descending=True).tolist()
        order += [bucket[j] for j in ranks]
    return order


def labels_for(input_ids: list[list[int]], lengths: Sequence[int], prompt_lengths: Sequence[int] | None = None
               ) -> list[list[int]]:
    """run.py:266-272: labels = the right-padded input_ids, -100 after each row's first pad (pad = EOS,
    so the first one teaches the model to stop); ``prompt_lengths`` (switch loss_on_response_only)
    also masks the prompt tokens."""
    out = []
    for i, (row, n) in enumerate(zip(input_ids, lengths, strict=True)):
        labels = [t if j <= n else -100 for j, t in enumerate(row)]
        if prompt_lengths is not None:
            labels[:prompt_lengths[i]] = [-100] * min(prompt_lengths[i], len(labels))
        out.append(labels)
    return out


def generation_max_length(padded_prompt_length: int, protocol: Protocol = PROTOCOL) -> int:
    """run.py:74-79: transformers takes max_length or max_new_tokens, PEFT wants the smaller."""
    return min(protocol.max_new_tokens + padded_prompt_length, protocol.max_length)


def frozen_dtype(model_cfg: dict) -> str | None:
    """The frozen weights' dtype: PEFT's bf16 for real checkpoints (trained without AMP, adapters fp32);
    tiny test models stay fp32 (None: the runner's default), as CPU bf16 kernels made their generation
    ~100x slower (57 s vs 0.6 s for 4 x 300 tokens, measured)."""
    return None if model_cfg["kind"] == "tiny" else PROTOCOL.weights_dtype
