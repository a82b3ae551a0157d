"""PEFT's benchmark result format (huggingface/peft, method_comparison/MetaMathQA/results/*.json), both ways.

A PEFT result file has three parts (utils.py:717-744 at 5d602fdb): ``run_info`` (experiment name,
train_config, peft_config), ``train_info`` (memory, train_time, parameter counts, status, metrics: one row
per validation round and a last row with "test accuracy") and ``meta_info`` (model and dataset shas,
package versions, system incl. the accelerator's name). ``from_run`` writes one from a run of task
math/gsm8k (so a CapaBoost row can be sent upstream); ``read`` takes any such file, PEFT's or ours, to
one table row. Torch-free.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.files import write_text

RUN_FILE = "peft_result.json"  # beside result.json in a math run's directory


@dataclass(frozen=True)
class Row:
    origin: str                 # "PEFT" (their published file) | "ours"
    method: str                 # peft_type, lower case (lora, capaboost_lora, full-finetuning, ...)
    config: str                 # the key settings: rank, alpha, targets, lr, CapaBoost's d and density
    experiment: str             # run_info.experiment_name
    trainable: int
    accuracy: float | None      # GSM8K test accuracy, a fraction
    train_time: float | None    # seconds, evaluation excluded
    peak_memory: int | None     # bytes: max reserved GPU memory over the run (generation included)
    gpu: str
    source: str                 # the file read


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _peft_config(result: dict[str, Any]) -> dict[str, Any]:
    """PEFT's LoraConfig fields that describe the run; CapaBoost adds d, density, mask, mask_seed."""
    model, cb = result["config"]["model"], result["identity"]["capaboost"]
    out = {"task_type": "CAUSAL_LM", "peft_type": "CAPABOOST_LORA" if result["capaboost"] else "LORA",
           "base_model_name_or_path": model.get("path") or model.get("hub_id") or model["name"],
           "r": cb["r"], "lora_alpha": cb["alpha"], "lora_dropout": cb["dropout"],
           "target_modules": list(cb["target_modules"] or ("q_proj", "v_proj")), "bias": "none"}
    if result["capaboost"]:
        out |= {"d": cb["d"], "density": cb["density"], "mask": cb["mask"], "mask_seed": cb["mask_seed"]}
    return out


def experiment_name(result: dict[str, Any]) -> str:
    """PEFT's <method>/<setting> naming, e.g. capaboost_lora/llama-3.2-3b-rank43-d2-density0.5."""
    cb = result["identity"]["capaboost"]
    name = f"{result['model']}-rank{cb['r']}"
    if result["capaboost"]:
        name += f"-d{cb['d']}-density{cb['density']:g}"
    return f"{result['peft']}/{name}-seed{result['seed']}"


def from_run(result: dict[str, Any], rows: list[dict[str, Any]], train_time: float | None,
             reserved: list[int], peak_reserved: int | None, file_size: int) -> dict[str, Any]:
    """A PEFT-format record of one finished run (``result``: the result.json dict being written)."""
    from tasks.facts.math import PROTOCOL

    hp = result["hparams"]
    reserved = sorted(reserved)
    p99 = reserved[min(len(reserved) - 1, int(round(0.99 * (len(reserved) - 1))))] if reserved else None
    train_config = {
        "model_id": result["config"]["model"].get("hub_id") or result["model"],
        "dtype": PROTOCOL.weights_dtype,
        "max_seq_length": hp["max_seq_length"], "batch_size": hp["batch_size"],
        "batch_size_eval": result["config"]["trainer"]["eval_batch_size"], "max_steps": result["global_step"],
        "eval_steps": result["config"]["task"]["eval_every_steps"], "compile": False, "use_gc": False,
        "query_template": PROTOCOL.template, "seed": result["seed"], "grad_norm_clip": hp["max_grad_norm"],
        "optimizer_type": "AdamW", "optimizer_kwargs": {"lr": hp["lr"], "weight_decay": hp["weight_decay"]},
        "lr_scheduler": hp["lr_scheduler"], "use_amp": False, "autocast_adapter_dtype": True,
        "generation_kwargs": {"max_length": PROTOCOL.max_length, "max_new_tokens": PROTOCOL.max_new_tokens},
        "attn_implementation": None, "init_kv_cache_prefix": None,
        "switches": result["config"]["task"]["switches"]}
    return {
        "run_info": {"created_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
                     "total_time": result["runtime_s"],
                     "experiment_name": experiment_name(result), "peft_branch": None,
                     "train_config": train_config, "peft_config": _peft_config(result), "error_msg": "",
                     "harness": {"name": "capaboost", "git_sha": result["git_sha"],
                                 "result_json": "result.json", "params": result["params"]}},
        "train_info": {"accelerator_memory_reserved_avg": sum(reserved) // max(1, len(reserved)) or None,
                       "accelerator_memory_max": peak_reserved, "accelerator_memory_reserved_99th": p99,
                       "train_time": train_time, "file_size": file_size,
                       # CapaBoost: the entries some mask keeps (what PEFT papers compare); the stored
                       # tensors are run_info.harness.params.trainable
                       "num_trainable_params": result["params"]["peft"],
                       "num_total_params": result["params"]["total"], "status": "success", "metrics": rows},
        "meta_info": {"model_info": {"sha": None, "created_at": None}, "dataset_info": {},
                      "package_info": {f"{p}-version": _version(p)
                                       for p in ("transformers", "peft", "datasets", "torch")},
                      "system_info": {"system": platform.system(), "machine": platform.machine(),
                                      "accelerator": result.get("device", "cpu")}}}


def write(record: dict[str, Any], path: Path) -> None:
    write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def _key_config(pc: dict[str, Any] | None, tc: dict[str, Any]) -> str:
    lr = tc.get("optimizer_kwargs", {}).get("lr")
    if not pc:
        return f"lr {lr:g}" if lr else ""
    parts = []
    if pc.get("r") is not None:
        parts.append(f"r {pc['r']}")
    if pc.get("lora_alpha") is not None:
        parts.append(f"α {pc['lora_alpha']:g}")
    if pc.get("d") is not None:
        parts.append(f"d {pc['d']} density {pc['density']:g}")
    if pc.get("use_rslora"):
        parts.append("rsLoRA")
    if pc.get("use_dora"):
        parts.append("DoRA")
    targets = pc.get("target_modules")
    if isinstance(targets, list) and targets:
        parts.append("/".join(sorted(t.replace("_proj", "") for t in targets)))
    if lr:
        parts.append(f"lr {lr:g}")
    return ", ".join(parts)


def read(path: str | Path, origin: str = "PEFT") -> Row:
    """One PEFT-format file -> a table row; ValueError naming the file if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        run, train, meta = data["run_info"], data["train_info"], data["meta_info"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a PEFT result file ({type(error).__name__}: {error})") from None
    pc, tc = run.get("peft_config"), run.get("train_config", {})
    tests = [m["test accuracy"] for m in train.get("metrics", []) if "test accuracy" in m]
    method = (pc or {}).get("peft_type", "full-finetuning").lower()
    return Row(origin=origin, method=method, config=_key_config(pc, tc),
               experiment=run.get("experiment_name", ""),
               trainable=int(train["num_trainable_params"]), accuracy=tests[-1] if tests else None,
               train_time=train.get("train_time"), peak_memory=train.get("accelerator_memory_max"),
               gpu=meta.get("system_info", {}).get("accelerator", "?"), source=str(path))
