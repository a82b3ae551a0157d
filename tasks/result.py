"""result.json, versioned: every key once (its JSON type and meaning), the files around a run, the one
writer and the one reader.

The runner builds a result through ``build`` (an unknown key or a missing one is a bug, raised at once),
``write`` stores it (strict JSON, atomic), and reporting, ``make status`` and re-runs read it back with
``read`` / ``problem``. A reader needs the ``REQUIRED`` keys only (the public minimum); the runner writes
every key marked ``always``. No torch here: login nodes and ``make tables`` import it.

Some values appear more than once, on purpose, each copy with its own reader:

- ``d`` (likewise ``density``, ``mask``, ``mask_seed``) is a top-level key (what a table or a ``jq`` filter
  selects on), again in ``config`` (the resolved config as composed, so a run can be repeated from its
  result alone) and in ``identity.capaboost`` (the values hashed into the run directory and W&B group);
- ``r`` (and the other recipe values) is in ``hparams`` (what the run trained with, recipe applied) and
  in ``identity`` (``capaboost.r`` and ``hparams.r``: the hash input, as the hash was computed).

Version: ``schema_version`` counts incompatible changes (a key removed, renamed or given a new type or
meaning); adding an optional key is not one. Files without it are version 1 (the format before the key
existed). A reader refuses a file from a newer version in one line rather than misread it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.files import write_text

SCHEMA_VERSION = 1

# --- the files of a run directory (runs_root/<task>/<model>/<peft>/<readable>-<hash>/) ----------------------
RESULT = "result.json"            # a finished run: this schema
STATUS = "status.json"            # heartbeat while it runs; why, when it failed (tasks.cluster.status)
WEIGHTS = "peft.safetensors"      # CapaBoost/PEFT weights and masks (capaboost.save)
ADAPTER_DIR = "peft_adapter"      # a PEFT-library baseline's adapter (tasks.training.baselines)
CHECKPOINTS = "checkpoints"       # Trainer checkpoints a killed run resumes from (tasks.cluster.checkpoints)
PENDING = "sweeps.pending"        # sweeps that found the run held, a file each (tasks.cluster.finished)
FORCED = "forced.json"            # the launch whose force=true discarded the result (tasks.cluster.finished)
WANDB_DIR = "wandb"               # W&B's offline files
WANDB_ID = "wandb_id"             # the W&B run id a resumed run continues

NUMBER = (int, float)
OBJECT, ARRAY, TEXT, INT, BOOL = (dict,), (list,), (str,), (int,), (bool,)
STATUSES = ("completed", "diverged")


@dataclass(frozen=True)
class Key:
    """One top-level key: the JSON types its value may have, whether it may be null, and what it means.

    ``required``: every result.json has it (the public minimum: a file without it is refused);
    ``always``: the runner writes it in every result (``build`` insists; a reader does not, so a result
    written by other tools with the required keys only is still read); neither: only some runs have
    it (a diverged run, a math run, a GPU run)."""

    name: str
    types: tuple[type, ...]
    meaning: str
    nullable: bool = False
    always: bool = True
    required: bool = False


# The public minimum of a result.json (README): what every reader may rely on.
REQUIRED = ("task", "model", "peft", "method", "capaboost", "d", "density", "mask", "seed", "metrics", "best",
            "main_metric", "params", "status", "runtime_s", "git_sha", "versions", "config")


def _k(name: str, types: tuple[type, ...], meaning: str, nullable: bool = False, always: bool = True) -> Key:
    return Key(name, types, meaning, nullable, always, name in REQUIRED)


# In the order a result.json lists them.
KEYS: tuple[Key, ...] = (
    _k("schema_version", INT, "version of this format (absent: 1); `build` writes it"),
    _k("task", TEXT, "task name: family/dataset (glue/rte)"),
    _k("model", TEXT, "model preset (conf/model/)"),
    _k("peft", TEXT, "PEFT preset (conf/peft/): capaboost_lora, lora, dora, ..."),
    _k("method", TEXT, "the PEFT method under it: lora, padapter, prefix or a PEFT-library baseline"),
    _k("capaboost", BOOL, "CapaBoost on (d masked branches) or the method alone"),
    _k("d", INT, "number of CapaBoost branches (1 without CapaBoost)"),
    _k("density", NUMBER, "fraction of each branch's weights its mask keeps (1.0 without CapaBoost)"),
    _k("mask", TEXT, "mask kind"),
    _k("seed", INT, "training seed (data order, head init)"),
    _k("mask_seed", INT, "seed of the CapaBoost masks"),
    _k("metrics", OBJECT, "final-epoch metrics on the report split, fractions (paper metric names)",
       nullable=True),
    _k("best", OBJECT, "metrics of the epoch the selection rule chose, on the report split", nullable=True),
    _k("best_epoch", NUMBER, "1-based epoch of `best`", nullable=True),
    _k("epochs_evaluated", INT, "evaluation rounds run"),
    _k("selection", OBJECT, "how `best` was chosen: metric, value, split, rule (task.report)", nullable=True),
    _k("main_metric", TEXT, "the task's headline metric"),
    _k("params", OBJECT, "parameter counts: trainable, effective (kept by some mask), peft (PEFT modules "
                         "only, no head), total; prefix_inference for prefix tuning"),
    _k("status", TEXT, f"one of {', '.join(STATUSES)}"),
    _k("runtime_s", NUMBER, "wall-clock seconds of this process, load to write"),
    _k("resumed_from", TEXT, "checkpoint this process resumed from", nullable=True),
    _k("global_step", INT, "optimizer steps done"),
    _k("git_sha", TEXT, "commit of the code (-dirty: with uncommitted changes)", nullable=True),
    _k("versions", OBJECT, "package versions: python, capaboost, torch, transformers, peft, ..."),
    _k("config", OBJECT, "the resolved config, as composed"),
    _k("hparams", OBJECT, "the hyperparameters trained with (recipe applied, overrides on top)"),
    _k("protocol", TEXT, "data protocol (task.protocol): which splits select and report"),
    _k("group", TEXT, "W&B group and table cell: the identity without the seed, readable then hashed"),
    _k("identity", OBJECT, "the values that define the experiment (tasks.config.identity), hashed into "
                           "run_dir and group"),
    _k("identity_key", TEXT, "hash of `identity`"),
    _k("sweeps", ARRAY, "sweeps that asked for this run ([]: launched alone)"),
    _k("mask_digest", TEXT, "digest of the CapaBoost masks (the same on every rank)", nullable=True),
    _k("rank", OBJECT, "measured rank of ΔW: min, mean, max, bound", nullable=True),
    _k("world_size", INT, "processes that trained (DDP)"),
    _k("per_device_batch_size", INT, "batch per process and step"),
    _k("grad_accum", INT, "gradient accumulation steps"),
    _k("run_dir", TEXT, "the run directory"),
    _k("history", ARRAY, "every evaluation round: epoch, step, metrics per split (non-finite: null)"),
    _k("device", TEXT, "GPU name, or cpu"),
    _k("precision", TEXT, "precision trained in: fp32, fp16 or bf16"),
    _k("cuda_visible_devices", TEXT, "CUDA_VISIBLE_DEVICES as the run saw it", nullable=True),
    _k("torch_build", TEXT, "torch version"),
    _k("torch_cuda", TEXT, "CUDA torch was built with", nullable=True),
    _k("nvidia_driver", TEXT, "NVIDIA driver version", nullable=True),
    _k("peak_gpu_memory_bytes", INT, "peak GPU memory allocated (GPU runs)", always=False),
    _k("data_digest", OBJECT, "content digest per split of data.path data (else null)", nullable=True),
    _k("diverged", OBJECT, "where a diverged run stopped: step, epoch, key, value", always=False),
    _k("peft_result", TEXT, "the same run in PEFT's method-comparison format, beside (math runs)",
       always=False),
    _k("train_time_s", NUMBER, "training seconds, evaluation excluded (math runs)", always=False),
    _k("peak_gpu_reserved_bytes", INT, "peak GPU memory reserved (math runs; null on CPU)", nullable=True,
       always=False),
)
BY_NAME = {k.name: k for k in KEYS}


class ResultError(ValueError):
    """A result file that is not a result of this schema; the message is one line."""


def build(**values: Any) -> dict[str, Any]:
    """A result in schema order, stamped with this version. A key the schema does not define, or one it
    always has left out, is a bug in the caller (raised here, before any training is lost to it)."""
    values["schema_version"] = SCHEMA_VERSION
    unknown = sorted(set(values) - set(BY_NAME))
    missing = [k.name for k in KEYS if k.always and k.name not in values]
    if unknown or missing:
        raise KeyError(f"result keys not in tasks/result.py: {unknown}; missing: {missing}")
    return {k.name: values[k.name] for k in KEYS if k.name in values}


def _type_name(key: Key) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "an object",
             list: "an array"}
    return " or ".join(dict.fromkeys(names[t] for t in key.types if not (t is int and float in key.types)))


def problem(data: Any) -> str | None:
    """Why ``data`` (a parsed result.json) is not a result of this schema, in one line; None when it is."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    version = data.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        return f"schema_version={json.dumps(version)} is not an integer"
    if version > SCHEMA_VERSION:
        return (f"schema_version {version} is newer than this code reads ({SCHEMA_VERSION}): "
                "update the code")
    missing = [k.name for k in KEYS if k.required and k.name not in data]
    if missing:
        return f"missing keys {missing} (partial result)"
    extra = sorted(set(data) - set(BY_NAME))
    if extra:
        return f"keys {extra} are not result.json keys (tasks/result.py)"
    for name, value in data.items():
        key = BY_NAME[name]
        if value is None and key.nullable:
            continue
        if isinstance(value, bool) != (bool in key.types) or not isinstance(value, key.types):
            return f"{name}={json.dumps(value, default=str)[:60]} is not {_type_name(key)}"
    if data["status"] not in STATUSES:
        return f"status={json.dumps(data['status'])} is not one of {', '.join(STATUSES)}"
    return None


def check(data: Any) -> dict[str, Any]:
    """``data`` if it is a result of this schema, else ResultError (one line)."""
    why = problem(data)
    if why:
        raise ResultError(why)
    return data


def parse(text: bytes) -> Any:
    """The JSON value of a result file's bytes; ValueError (one line, naming what is wrong) when it is not
    complete UTF-8 JSON (a torn file: empty, truncated)."""
    try:
        return json.loads(text.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 at byte {error.start}") from None
    except ValueError as error:
        raise ValueError("empty" if not text.strip() else f"not complete JSON ({error})") from None


def read(path: str | Path) -> dict[str, Any]:
    """The result at ``path``, checked; OSError when unreadable, ResultError (one line) when it is not a
    result of this schema (torn, or a key missing, extra, mistyped, or a newer version)."""
    try:
        data = parse(Path(path).read_bytes())
    except ValueError as error:
        raise ResultError(str(error)) from None
    return check(data)


def table() -> str:
    """The keys as a Markdown table (docs/results.md holds it: ``python -m tasks.result``)."""
    lines = ["| key | JSON type | present | meaning |", "|---|---|---|---|"]
    for k in KEYS:
        kind = _type_name(k) + (", or null" if k.nullable else "")
        present = "required" if k.required else "every run" if k.always else "some runs"
        lines.append(f"| `{k.name}` | {kind} | {present} | {k.meaning} |")
    return "\n".join(lines) + "\n"


def to_json(result: dict[str, Any]) -> str:
    """Strict JSON: a bare NaN is refused here rather than written for other readers to choke on."""
    return json.dumps(result, indent=2, default=str, allow_nan=False) + "\n"


def write(path: str | Path, result: dict[str, Any]) -> None:
    """Write ``result`` atomically (a reader never sees half a file), after checking it."""
    write_text(path, to_json(check(result)))


if __name__ == "__main__":
    print(table(), end="")
