"""MetaMathQA -> GSM8K (PEFT's decoder benchmark) on the common runner: a causal LM trained on prompt +
response, evaluated by generating answers (tasks/facts/math.py holds the protocol's facts).

Training goes through the stock Trainer: the data is put in PEFT's bucketed order up front and read
sequentially, and a collator pads right with EOS and masks the labels after each row's first EOS.
Evaluation is a callback (``GenerationEvaluation``): every ``task.eval_every_steps`` steps it generates
on the 50 validation questions, after the last step on the validation and the test split, and logs
``eval_<split>_accuracy`` as the epoch evaluation does, so history and result.json are built as for
every task. The run also writes its result in PEFT's own format (tasks/peft_result.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, TrainerCallback

from tasks import peft_result as peft_format
from tasks.config.runspec import RunSpec
from tasks.facts import math as mp
from tasks.suites.metrics import math_accuracy
from tasks.training import models
from tasks.training.evaluation import EvalSplit, eval_limit
from tasks.training.job import Job, data_source


class CausalCollator:
    """Right padding with the pad (= EOS) id; labels = input_ids, -100 after each row's first pad
    (math_protocol.labels_for) and, with ``response_only``, over the prompt."""

    def __init__(self, pad_id: int, response_only: bool = False) -> None:
        self.pad_id, self.response_only = pad_id, response_only

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(r["input_ids"]) for r in rows]
        width = max(lengths)
        ids = [r["input_ids"] + [self.pad_id] * (width - n) for r, n in zip(rows, lengths, strict=True)]
        mask = [[1] * n + [0] * (width - n) for n in lengths]
        prompts = [r["prompt_length"] for r in rows] if self.response_only else None
        labels = mp.labels_for(ids, lengths, prompts)
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
                "labels": torch.tensor(labels)}


def generate(model: torch.nn.Module, tokenizer: Any, dataset: Any, batch_size: int,
             greedy: bool = False) -> list[str]:
    """PEFT's evaluate() (run.py:84-104): left-padded batches in order, GenerationConfig(max_length=
    min(300 + padded prompt, 800), pad_token_id), the whole output (prompt included) decoded."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    predictions: list[str] = []
    extra = {"do_sample": False} if greedy else {}
    threads = torch.get_num_threads()
    if device.type == "cpu":  # token-by-token steps: extra threads only add sync cost on a busy CPU
        torch.set_num_threads(1)  # (tiny Llama, 4 x 115 tokens, 2 busy cores: 4.9 s vs 78 s, measured)
    try:
        with torch.inference_mode():
            for j in range(0, len(dataset), batch_size):
                rows = dataset[j:j + batch_size]
                inputs = {"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"]}
                batch = tokenizer.pad(inputs, return_tensors="pt", padding_side="left").to(device)
                config = GenerationConfig(max_length=mp.generation_max_length(batch["input_ids"].shape[1]),
                                          pad_token_id=tokenizer.pad_token_id, **extra)
                out = model.generate(**batch, generation_config=config)
                predictions += tokenizer.batch_decode(out, skip_special_tokens=True)
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)
    return predictions


class GenerationEvaluation(TrainerCallback):
    """Validation every ``every`` steps and at the last; the test split at the last step only (PEFT's
    run.py:304-380). Also keeps what PEFT's result file reports: per-round rows, training time without
    evaluation, reserved GPU memory per step."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, evals: dict[str, EvalSplit], every: int | None,
                 batch_size: int, greedy: bool) -> None:
        self.model, self.tokenizer, self.evals = model, tokenizer, evals
        self.every, self.batch_size, self.greedy = every, batch_size, greedy
        self.trainer: Any = None
        self.rows: list[dict[str, Any]] = []      # PEFT's train_info.metrics
        self.reserved: list[int] = []             # torch.cuda.memory_reserved() after each step
        self.eval_time = 0.0
        self.train_time: float | None = None
        self._tic = 0.0
        self._losses_seen = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._tic = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if torch.cuda.is_available() and next(self.model.parameters()).is_cuda:
            self.reserved.append(torch.cuda.memory_reserved())
        last = state.global_step >= state.max_steps
        if last or (self.every and state.global_step % self.every == 0):
            self._round(state, ["select", "report"] if last else ["select"])

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.train_time = time.perf_counter() - self._tic - self.eval_time

    def _round(self, state: Any, names: list[str]) -> None:
        loss = self._recent_loss(state)
        for name in names:
            tic = time.perf_counter()
            split = self.evals[name]
            predictions = generate(self.model, self.tokenizer, split.dataset, self.batch_size, self.greedy)
            metrics = split.metrics(predictions)
            took = time.perf_counter() - tic
            self.eval_time += took
            logs = {f"eval_{name}_{k}": v for k, v in metrics.items()}
            self.trainer.log(logs | {f"eval_{name}_runtime": took})
            label = "valid accuracy" if name == "select" else "test accuracy"
            self.rows.append({"step": state.global_step, label: metrics["accuracy"], "train loss": loss,
                              "eval time": took})

    def _recent_loss(self, state: Any) -> float | None:
        """Mean of the training losses logged since the previous round (logging_steps apart)."""
        losses = [e["loss"] for e in state.log_history if "loss" in e]
        recent, self._losses_seen = losses[self._losses_seen:], len(losses)
        return sum(recent) / len(recent) if recent else None


def _tokenise(tokenizer: Any, with_answer: bool, max_length: int, response_only: bool):
    def encode(batch: dict[str, list]) -> dict[str, list]:
        prompts = [mp.prompt(q) for q in batch["query"]]
        texts = [p + r for p, r in zip(prompts, batch["response"], strict=True)] if with_answer else prompts
        enc = tokenizer(texts)
        out = {k: [v[:max_length] for v in enc[k]] for k in ("input_ids", "attention_mask")}  # data.py:95
        if response_only:
            out["prompt_length"] = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
        return out
    return encode


def load(spec: RunSpec) -> Any:
    """train/select/report splits (tasks.data.check checks them before a run directory exists)."""
    from tasks.data.load import load_math

    return load_math(data_source(spec), train_limit=spec.config["data"]["train_limit"])


def prepare(spec: RunSpec, raw: Any = None) -> Job:
    data, hp, task = spec.config["data"], spec.hparams, spec.config["task"]
    switches = {k: bool(v) for k, v in task["switches"].items()}
    max_length = hp["max_seq_length"]
    raw = load(spec) if raw is None else raw
    raw["select"], raw["report"] = (eval_limit(raw[s], data["eval_limit"]) for s in ("select", "report"))
    corpus = (text for split in raw.values() for col in ("query", "response") for text in split[col])
    model, tokenizer = models.load_causal(spec.config["model"], corpus, max_length, mp.PROTOCOL.weights_dtype)
    tokenizer.padding_side, tokenizer.pad_token = "right", tokenizer.eos_token  # utils.py:212-213
    tokenizer.model_max_length = max_length

    response_only = switches.get("loss_on_response_only", False)
    train = raw["train"].map(_tokenise(tokenizer, True, max_length, response_only), batched=True,
                             remove_columns=raw["train"].column_names)
    shuffle = switches.get("shuffle_train", False)
    if not shuffle:
        train = train.select(mp.bucket_order([len(x) for x in train["input_ids"]], hp["batch_size"]))
    lenient = switches.get("lenient_answers", False)

    def split(ds: Any) -> EvalSplit:
        golds = list(ds["response"])
        encoded = ds.map(_tokenise(tokenizer, False, max_length, False), batched=True,
                         remove_columns=ds.column_names)
        return EvalSplit(encoded, lambda preds: {"accuracy": math_accuracy(preds, golds, lenient)})

    evals = {name: split(raw[name]) for name in ("select", "report")}
    batch = spec.config["trainer"]["eval_batch_size"] or hp["batch_size"]
    evaluator = GenerationEvaluation(model, tokenizer, evals, task["eval_every_steps"], batch,
                                     switches.get("greedy", False))

    def finish(result: dict[str, Any], run_dir: Path) -> None:
        peak = torch.cuda.max_memory_reserved() if evaluator.reserved else None
        record = peft_format.from_run(result, rows=_rows(result["history"], evaluator.rows),
                                      train_time=evaluator.train_time,
                                      reserved=evaluator.reserved, peak_reserved=peak,
                                      file_size=_adapter_bytes(model))
        peft_format.write(record, run_dir / peft_format.RUN_FILE)
        result["peft_result"] = peft_format.RUN_FILE
        result["train_time_s"] = evaluator.train_time
        result["peak_gpu_reserved_bytes"] = peak

    collator = CausalCollator(tokenizer.pad_token_id, response_only)
    return Job(model=model, train=train, evals=evals, collator=collator, label_names=["labels"],
               select_score=mp.SUITE.selection[spec.dataset].score,
               selection_metric=mp.SUITE.selection[spec.dataset].name,
               evaluator=evaluator, train_sampling="random" if shuffle else "sequential", finish=finish,
               frozen_dtype=mp.frozen_dtype(spec.config["model"]))


def _rows(history: list[dict[str, Any]], live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PEFT's metrics rows: this process's, plus the rounds a resumed run evaluated before its restart
    (from the history; their loss and timing were not kept)."""
    seen = {(r["step"], "test accuracy" in r) for r in live}
    restored = [{"step": h["step"], label: h[split]["accuracy"]} for h in history
                for split, label in (("select", "valid accuracy"), ("report", "test accuracy"))
                if split in h and (h["step"], split == "report") not in seen]
    return sorted(restored + live, key=lambda r: (r["step"], "test accuracy" in r))


def _adapter_bytes(model: torch.nn.Module) -> int:
    """Bytes of the trainable tensors (PEFT reports its adapter file's size, utils.py:369-377)."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
