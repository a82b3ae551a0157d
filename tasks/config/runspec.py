"""Config validation: everything run.py checks before torch is imported.

The typed schema (tasks/config/schema.py) catches misspelt keys and wrong types at compose time;
``resolve`` then checks values (ranges, choices, model/method/task compatibility) and folds the recipe,
the vanilla-PEFT rule and the overrides into one flat ``RunSpec``. Nothing here imports torch,
transformers or datasets: a bad config is rejected in about a second.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from capaboost.backbones import BACKBONES
from capaboost.config import MASKS, METHODS, CapaBoostConfig
from tasks.config import identity, methods
from tasks.config.schema import (  # noqa: F401 (register: run.py)
    PEFT_FROM_RECIPE,
    TINY_VOCAB,
    TRAINER_FROM_RECIPE,
    register,
)
from tasks.facts import vtab
from tasks.facts.families import FAMILIES

PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # auto: bf16 / fp16 / fp32 by device (tasks/training/device.py)
CLIP_MODES = ("true_norm", "official")  # official: the authors' global norm (tasks/training/clipping.py)
DEVICES = ("auto", "cuda", "cpu")
LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online")
DATA_SOURCES = ("hub", "fixture")
MODEL_KINDS = ("hf", "timm", "tiny", "minilm")
# Per family, from its facts (tasks/facts/): task.protocol's choices, the model variant it trains, and
# task.report's choices (the epoch whose metrics are "best". best_select_epoch: the paper's rule on the
# select split; final_epoch: the last; best_test_epoch: VTAB's select split IS test, so the name says it).
PROTOCOLS = {family: suite.protocols for family, suite in FAMILIES.items()}
MODALITY = {family: suite.modality for family, suite in FAMILIES.items()}
REPORT_RULES = {family: suite.report_rules for family, suite in FAMILIES.items()}
# CapaBoostConfig's fields as the config spells them (its ValueError names the field).
_CONFIG_KEY = {"method": "peft.method", "d": "d", "density": "density", "mask": "mask",
               "mask_seed": "mask_seed", "r": "peft.r", "alpha": "peft.alpha", "dropout": "peft.dropout",
               "init": "peft.init",
               "reduction_factor": "peft.reduction_factor", "prefix_length": "peft.prefix_length",
               "prefix_hidden": "peft.prefix_hidden", "target_modules": "peft.target_modules",
               "modules_to_save": "peft.modules_to_save", "nm_group": "mask"}


class ConfigError(ValueError):
    """A bad config value; the message names the key."""


@dataclass(frozen=True)
class RunSpec:
    """One run, fully resolved: what the trainer and result.json need, as plain data."""
    task: str
    family: str
    dataset: str
    protocol: str
    main_metric: str
    modality: str
    model: str
    backbone: str
    peft: str
    method: str
    capaboost: bool
    d: int
    density: float
    mask: str
    seed: int
    mask_seed: int
    hparams: dict[str, Any]
    # the PEFT module's settings (a baseline: tasks.config.methods.settings)
    capaboost_config: dict[str, Any]
    config: dict[str, Any]
    run_dir: str
    force: bool
    identity: dict[str, Any]              # tasks/config/identity.py: what makes two runs the same experiment
    identity_key: str
    group: str
    sweep: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _choice(key: str, value: Any, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def _positive(key: str, value: Any, integer: bool = False, low: float = 0.0, inclusive: bool = False) -> None:
    """``value`` > ``low`` (>= with ``inclusive``) and finite: NaN compares false with everything, so
    without the explicit check ``nan`` and ``inf`` would pass every range."""
    if value is None:
        return
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}={value!r} must be an integer")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite number")
    if value < low or (value == low and not inclusive):
        raise ConfigError(f"{key}={value!r} must be {'>=' if inclusive else '>'} {low:g}")


# Numeric rules as data: key -> (lowest value, whether the lowest itself is allowed); every one must be
# finite. Recipe-supplied keys are checked after the recipe is merged (``_hparams``), the others as set.
FLOAT_RULES = {"epochs": (0.0, False), "lr": (0.0, False), "weight_decay": (0.0, True),
               "max_grad_norm": (0.0, False), "save_every_minutes": (0.0, False)}
INT_KEYS = ("batch_size", "max_seq_length", "doc_stride", "max_steps", "grad_accum", "eval_batch_size",
            "logging_steps", "save_total_limit", "save_every_steps")


def _check_harness_values(c: dict[str, Any]) -> None:
    """Ranges and choices of the harness's own keys (the method's are CapaBoostConfig's to check)."""
    model, peft, task, trainer, data, logger = (c[k] for k in ("model", "peft", "task", "trainer", "data",
                                                                "logger"))
    _choice("mask", c["mask"], MASKS)            # the rest of the method's values: CapaBoostConfig
    _choice("peft.method", peft["method"], METHODS + tuple(methods.BASELINES))
    _choice("task.family", task["family"], tuple(PROTOCOLS))
    _choice("task.protocol", task["protocol"], PROTOCOLS[task["family"]])
    _choice("task.report", task["report"], REPORT_RULES[task["family"]])
    _positive("task.eval_every", task["eval_every"], integer=True)
    _choice("model.kind", model["kind"], MODEL_KINDS)
    _choice("trainer.precision", trainer["precision"], PRECISIONS)
    _choice("trainer.device", trainer["device"], DEVICES)
    _choice("trainer.clip", trainer["clip"], CLIP_MODES)
    if trainer["use_cpu"] and trainer["device"] == "cuda":
        raise ConfigError("trainer.use_cpu=true contradicts trainer.device=cuda (use trainer.device=cpu)")
    if trainer["gradient_checkpointing"] and MODALITY[task["family"]] != "text":
        raise ConfigError(f"trainer.gradient_checkpointing=true is for the transformers text models; "
                          f"task={task['name']} trains a timm model (leave it false)")
    _choice("logger.name", logger["name"], LOGGERS)
    _choice("logger.mode", logger["mode"], WANDB_MODES)
    for key, (low, inclusive) in FLOAT_RULES.items():
        _positive(f"trainer.{key}", trainer[key], low=low, inclusive=inclusive)
    for key in INT_KEYS:
        _positive(f"trainer.{key}", trainer[key], integer=True)
    for key in ("train_limit", "eval_limit"):
        _positive(f"data.{key}", data[key], integer=True)
    _choice("task.dataset", task["dataset"], FAMILIES[task["family"]].tasks)
    _positive("task.eval_every_steps", task["eval_every_steps"], integer=True)
    if task["switches"]:
        from tasks.facts.math import SWITCHES

        if task["family"] != "math":
            raise ConfigError(f"task.switches: task={task['name']} has no switches (only the math family)")
        unknown = sorted(set(task["switches"]) - set(SWITCHES))
        if unknown:
            raise ConfigError(f"task.switches: unknown {', '.join(unknown)}; known: {', '.join(SWITCHES)}")


def _backbone(model: dict[str, Any], peft: dict[str, Any], task: dict[str, Any]) -> tuple[str, str]:
    """(modality, backbone): the model's variant for the task's modality, and that it supports the method."""
    modality = MODALITY[task["family"]]
    if modality not in model["backbones"]:
        raise ConfigError(f"model={model['name']} has no {modality} variant but task={task['name']} needs "
                          f"{modality}; models for {modality}: see conf/model/")
    backbone = model["backbones"][modality]
    if task["family"] == "math" and not (backbone in BACKBONES and BACKBONES[backbone].decoder):
        decoders = ", ".join(k for k, v in BACKBONES.items() if v.decoder)
        raise ConfigError(f"task={task['name']} generates text: it needs a causal LM (backbones {decoders}; "
                          f"e.g. model=tiny-llama or model=llama-3.2-3b); model={model['name']} is a "
                          f"{backbone} encoder")
    method = peft["method"]  # which methods a backbone takes: capaboost's own table (torch-free import)
    supported = BACKBONES[backbone].methods if backbone in BACKBONES else ()
    if methods.base_method(method) not in supported:  # a baseline goes where LoRA goes
        raise ConfigError(f"peft={peft['name']}: method {method!r} is not supported on model={model['name']} "
                          f"(backbone {backbone}); supported: {', '.join(supported)}")
    return modality, backbone


def _check_paths(model: dict[str, Any], data: dict[str, Any]) -> None:
    """Local model and data paths must exist; a data path makes the source "path"."""
    if data["path"] is not None:
        if not Path(data["path"]).exists():
            raise ConfigError(f"data.path={data['path']!r} does not exist")
        data["source"] = "path"
    else:
        _choice("data.source", data["source"], DATA_SOURCES)
    if model["path"] is not None:
        _check_model_path(model["kind"], model["name"], Path(model["path"]))


# What a save_pretrained directory must hold: a parseable config.json and one of these tokenizer files.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "spm.model",
                   "sentencepiece.bpe.model")


def _check_model_path(kind: str, name: str, path: Path) -> None:
    """model.path must be what the model's loader reads: a timm checkpoint file, or a save_pretrained
    directory with a readable config.json and a tokenizer (not found: transformers' own messages name a
    missing tokenizer package instead). A random-init model reads none: a path there would be ignored."""
    key = f"model.path={str(path)!r}"
    if not path.exists():
        raise ConfigError(f"{key} does not exist")
    if kind == "tiny":
        raise ConfigError(f"{key} is not used by model={name} (random init, no weights): drop it, or pick a "
                          f"model that loads weights")
    if kind == "timm":
        if not path.is_file():
            raise ConfigError(f"{key} must be a timm checkpoint file (.safetensors, .pth), not a directory")
        return
    if not path.is_dir():
        raise ConfigError(f"{key} must be a save_pretrained directory (config.json, tokenizer files)")
    config = path / "config.json"
    try:
        loaded = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{key} has no config.json: not a save_pretrained directory") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"{key}: {config} is not readable JSON ({' '.join(str(error).split())[:120]})"
                          ) from None
    if not isinstance(loaded, dict) or not loaded.get("model_type"):
        raise ConfigError(f"{key}: {config} has no \"model_type\": not a transformers model config")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(f"{key} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)})")


def _check_run_tree(run_dir: Path) -> None:
    """Every existing part of the run's path must be a directory (a runs_root or a ``checkpoints`` that
    is a file would fail deep inside the Trainer): refused here, before anything is written."""
    checkpoints = run_dir / "checkpoints"
    for path in (checkpoints, *checkpoints.parents):
        if path.exists():  # the nearest existing part; everything above it is a directory then
            if not path.is_dir():
                raise ConfigError(f"{path} is a file, not a directory: the run directory {run_dir} "
                                  f"cannot be made there (move it away, or set runs_root=<dir>)")
            return


def check_vtab_source(task: dict[str, Any], data: dict[str, Any]) -> None:
    """VTAB-1k has no canonical hub dataset: without data.path (or data.hub_id) a run cannot start."""
    if task["family"] != "vtab" or data["source"] == "fixture":
        return
    lists = [f"{name}.txt" for name in dict.fromkeys(vtab.PROTOCOLS[task["protocol"]])]
    if data["source"] == "hub" and not data["hub_id"]:
        raise ConfigError(f"data.path is not set: VTAB-1k has no canonical hub dataset; set data.path=<dir> "
                          f"of the pre-split VTAB-1k folders (<dir>/{task['dataset']}/{' '.join(lists)})")
    if data["source"] == "path":
        root = Path(data["path"])
        if not any(all((folder / f).is_file() for f in lists) for folder in (root / task["dataset"], root)):
            raise ConfigError(f"data.path={data['path']!r} lacks the VTAB-1k lists {' '.join(lists)} for "
                              f"{task['dataset']} (looked in {task['dataset']}/ and .)")


def _hparams(c: dict[str, Any], method: str) -> dict[str, Any]:
    """The recipe for this (model, task, method), overridden by whatever the command line set."""
    trainer, peft = c["trainer"], c["peft"]
    overrides = {k: trainer[k] for k in TRAINER_FROM_RECIPE} | {k: peft[k] for k in PEFT_FROM_RECIPE}
    recipe = {k: v for k, v in c["recipe"][method].items() if k != "protocol"}  # protocol: task.protocol's
    hparams = {**recipe, **{k: v for k, v in overrides.items() if v is not None}}
    hparams.update(max_steps=trainer["max_steps"], grad_accum=trainer["grad_accum"],
                   precision=trainer["precision"], max_grad_norm=trainer["max_grad_norm"],
                   lr_scheduler=trainer["lr_scheduler"])
    if hparams["batch_size"] % trainer["grad_accum"]:
        raise ConfigError(f"trainer.grad_accum={trainer['grad_accum']} must divide the batch size "
                          f"{hparams['batch_size']}")
    for key in FLOAT_RULES.keys() & hparams.keys():  # the recipe's values too, named as the user sets them
        low, inclusive = FLOAT_RULES[key]
        _positive(f"trainer.{key}", hparams[key], low=low, inclusive=inclusive)
    if not 0.0 <= hparams["warmup_ratio"] < 1.0:
        raise ConfigError(f"warmup_ratio={hparams['warmup_ratio']} must be in [0, 1)")
    return hparams


def _baseline_config(c: dict[str, Any], hparams: dict[str, Any]) -> dict[str, Any]:
    """A PEFT-library baseline's settings (tasks/config/methods.py), in the place CapaBoost's take."""
    try:
        return methods.settings(c["peft"], hparams, c["mask_seed"])
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _capaboost_config(c: dict[str, Any], hparams: dict[str, Any]) -> dict[str, Any]:
    """The method's settings, checked by the method's own CapaBoostConfig (one set of rules); vanilla
    PEFT is one dense branch whatever the top level says."""
    peft = c["peft"]
    if peft["options"]:
        raise ConfigError(f"peft.options={peft['options']} applies to the PEFT-library baselines "
                          f"({', '.join(methods.BASELINES)}) only")
    d, density, mask = (c["d"], c["density"], c["mask"]) if peft["capaboost"] else (1, 1.0, "random")
    cb = {"method": peft["method"], "d": d, "density": density, "mask": mask, "mask_seed": c["mask_seed"],
          "r": hparams["r"], "alpha": hparams["alpha"], "dropout": peft["dropout"], "init": peft["init"],
          "reduction_factor": hparams["reduction_factor"], "prefix_length": hparams["prefix_length"],
          "prefix_hidden": hparams["prefix_hidden"], "target_modules": peft["target_modules"]}
    if peft["modules_to_save"] is not None:  # only when set: runs that leave it alone keep their identity
        cb["modules_to_save"] = peft["modules_to_save"]
    try:
        CapaBoostConfig(**cb)
    except ValueError as error:
        field = re.match(r"\w+", str(error))
        key = _CONFIG_KEY.get(field.group(0) if field else "", "peft")
        raise ConfigError(f"{key}: {error}") from None
    return cb


def resolve(cfg: DictConfig, sweep: str | None = None) -> RunSpec:
    """Validate ``cfg`` and fold it into a RunSpec; raises ConfigError naming the offending key.

    ``sweep``: the sweep file that launched the run (recorded in result.json; not part of its identity).
    """
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # Hydra's node needs a live job
    c = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    _check_harness_values(c)
    model, peft, task = c["model"], c["peft"], c["task"]
    modality, backbone = _backbone(model, peft, task)
    if model["kind"] == "tiny" and "text" in model["backbones"] and model["vocab_size"] is None:
        model["vocab_size"] = TINY_VOCAB  # recorded, so result.json and the identity carry the size used
    _check_paths(model, c["data"])
    check_vtab_source(task, c["data"])
    if task["family"] == "math" and c["data"]["source"] == "path":
        from tasks.facts.math import local_problem

        problem = local_problem(c["data"]["path"])
        if problem:
            raise ConfigError(problem)
    hparams = _hparams(c, methods.base_method(peft["method"]))
    baseline = methods.is_baseline(peft["method"])
    cb = _baseline_config(c, hparams) if baseline else _capaboost_config(c, hparams)
    c["d"], c["density"], c["mask"] = cb["d"], cb["density"], cb["mask"]
    ident = identity.identity(c, peft["name"], cb, hparams, TRAINER_FROM_RECIPE)
    run_dir = identity.run_dir(c["runs_root"], ident, c["seed"])
    _check_run_tree(Path(run_dir))
    return RunSpec(task=task["name"], family=task["family"], dataset=task["dataset"],
                   protocol=task["protocol"],
                   main_metric=task["main_metric"], modality=modality, model=model["name"], backbone=backbone,
                   peft=peft["name"], method=peft["method"], capaboost=bool(peft["capaboost"]), d=cb["d"],
                   density=cb["density"], mask=cb["mask"], seed=c["seed"], mask_seed=c["mask_seed"],
                   hparams=hparams, capaboost_config=cb, config=c,
                   run_dir=str(run_dir), force=bool(c["force"]),
                   identity=ident, identity_key=identity.identity_key(ident), group=identity.group(ident),
                   sweep=sweep)
