"""The typed config schema and its validation: everything run.py checks before torch is imported.

The dataclasses are registered as Hydra's ``base_config`` so a misspelt key or a wrong type fails at
compose time; ``resolve`` then checks values (ranges, choices, model/method/task compatibility) and
folds the recipe, the vanilla-PEFT rule and the overrides into one flat ``RunSpec``. Nothing here
imports torch, transformers or datasets: a bad config is rejected in about a second.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from tasks.schema import VTAB_PROTOCOLS

MASKS = ("random", "nm", "same", "none")
METHODS = ("lora", "padapter", "prefix")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # auto: bf16 / fp16 / fp32 by device (tasks/device.py)
DEVICES = ("auto", "cuda", "cpu")
LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online")
DATA_SOURCES = ("hub", "fixture")
MODEL_KINDS = ("hf", "timm", "tiny", "minilm")
PROTOCOLS = {"glue": ("split", "dev"), "squad": ("dev",), "vtab": ("tune", "final")}
MODALITY = {"glue": "text", "squad": "text", "vtab": "image"}
# task.report: the epoch whose metrics are "best". best_select_epoch: the paper's rule on the select
# split; final_epoch: the last; best_test_epoch: VTAB's select split IS test, so the name says it.
REPORT_RULES = {"glue": ("best_select_epoch", "final_epoch"), "squad": ("best_select_epoch", "final_epoch"),
                "vtab": ("final_epoch", "best_test_epoch")}
# Which base methods each backbone family supports (mirrors capaboost.families: prefix needs PEFT's
# past-key-value route; tests/test_run_config.py checks the two tables agree).
FAMILY_METHODS = {"roberta": METHODS, "bert": METHODS, "xlm-roberta": METHODS,
                  "deberta-v2": ("lora", "padapter"), "timm-vit": ("lora", "padapter")}
# Keys that never change a run's numbers: left out of the run directory's hash.
_NOT_HASHED = ("force", "runs_root", "logger")


class ConfigError(ValueError):
    """A bad config value; the message names the key."""


@dataclass
class ModelConf:
    name: str = MISSING
    kind: str = "hf"                      # hf | timm | tiny | minilm
    hub_id: str | None = None             # transformers hub id, or timm model name
    path: str | None = None               # local save_pretrained dir (timm: checkpoint file)
    families: dict[str, str] = field(default_factory=dict)   # modality -> backbone family
    hidden_size: int | None = None        # tiny only
    num_layers: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    image_size: int | None = None         # images: input resolution
    patch_size: int | None = None
    vocab_size: int | None = None         # tiny text: cap of the locally built word vocabulary


@dataclass
class PeftConf:
    name: str = MISSING
    method: str = MISSING                 # lora | padapter | prefix
    capaboost: bool = True                # False: vanilla, d=1 and density=1 whatever the top level says
    r: int | None = None                  # None: the recipe's value
    alpha: float | None = None
    reduction_factor: int | None = None
    prefix_length: int | None = None
    prefix_hidden: int | None = None
    dropout: float = 0.0
    init: str = "peft"                    # peft | official (LoRA A init)
    target_modules: list[str] | None = None


@dataclass
class TaskConf:
    name: str = MISSING                   # glue/cola
    family: str = MISSING                 # glue | squad | vtab
    dataset: str = MISSING                # cola | v1 | cifar
    protocol: str = MISSING
    main_metric: str = MISSING
    eval_every: int | None = 1            # epochs between evaluation rounds; None: after the last epoch only
    report: str = "best_select_epoch"     # which evaluated epoch result.json's "best" is (REPORT_RULES)


@dataclass
class TrainerConf:
    epochs: float | None = None           # None: the recipe's values for all of these
    lr: float | None = None
    batch_size: int | None = None         # total over devices and accumulation
    max_seq_length: int | None = None
    doc_stride: int | None = None
    warmup_ratio: float | None = None
    warmup_steps: int | None = None       # > 0 wins over warmup_ratio
    weight_decay: float | None = None
    max_steps: int | None = None          # tiny runs: replaces epochs (and the schedule's length), as in HF
    grad_accum: int = 1
    eval_batch_size: int | None = None
    precision: str = "auto"               # auto | fp32 | fp16 | bf16
    device: str = "auto"                  # auto | cuda | cpu (tasks/device.py)
    max_grad_norm: float = 1.0
    lr_scheduler: str = "linear"
    logging_steps: int = 50
    save_total_limit: int = 1
    num_workers: int = 0
    use_cpu: bool = False
    progress: bool = True


@dataclass
class DataConf:
    source: str = "hub"                   # hub | fixture ("path" once data.path is set)
    path: str | None = None
    split_seed: int = 42                  # the official protocol's split permutation, not the training seed
    hub_id: str | None = None             # VTAB from the hub: a dataset id pattern such as "org/vtab-{name}"
    train_limit: int | None = None
    eval_limit: int | None = None         # cap on every evaluation split (tiny runs)


@dataclass
class LoggerConf:
    name: str = "wandb"                   # wandb | none
    mode: str = "offline"                 # offline | online
    project: str = "capaboost"
    entity: str | None = None


@dataclass
class MethodRecipe:
    lr: float = MISSING
    epochs: float = MISSING
    batch_size: int = MISSING
    max_seq_length: int = 128
    doc_stride: int = 128
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    r: int = 8
    alpha: float = 16
    reduction_factor: int = 16
    prefix_length: int = 16
    prefix_hidden: int = 512


@dataclass
class RecipeConf:
    lora: MethodRecipe = field(default_factory=MethodRecipe)
    padapter: MethodRecipe = field(default_factory=MethodRecipe)
    prefix: MethodRecipe = field(default_factory=MethodRecipe)


@dataclass
class Config:
    model: ModelConf = field(default_factory=ModelConf)
    peft: PeftConf = field(default_factory=PeftConf)
    task: TaskConf = field(default_factory=TaskConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    data: DataConf = field(default_factory=DataConf)
    logger: LoggerConf = field(default_factory=LoggerConf)
    recipe: RecipeConf = field(default_factory=RecipeConf)
    d: int = 2
    density: float = 0.5
    mask: str = "random"
    seed: int = 42                        # training seed (head init, LoRA init, data order, dropout)
    mask_seed: int = 0                    # CapaBoost mask seed, independent of the training seed
    force: bool = False
    runs_root: str = "results/runs"


def register() -> None:
    """Make the schema available to Hydra as ``base_config``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=Config)


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
    model_family: str
    peft: str
    method: str
    capaboost: bool
    d: int
    density: float
    mask: str
    seed: int
    mask_seed: int
    hparams: dict[str, Any]
    capaboost_config: dict[str, Any]
    config: dict[str, Any]
    run_dir: str
    group: str
    force: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _choice(key: str, value: Any, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def _positive(key: str, value: Any, integer: bool = False) -> None:
    if value is None:
        return
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}={value!r} must be an integer")
    if value <= 0:
        raise ConfigError(f"{key}={value!r} must be > 0")


def _digest(data: Any, n: int = 8) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _fmt(x: float) -> str:
    return f"{x:g}"


def check_vtab_source(task: dict[str, Any], data: dict[str, Any]) -> None:
    """VTAB-1k has no canonical hub dataset: without data.path (or data.hub_id) a run cannot start."""
    if task["family"] != "vtab" or data["source"] == "fixture":
        return
    lists = [f"{name}.txt" for name in dict.fromkeys(VTAB_PROTOCOLS[task["protocol"]])]
    if data["source"] == "hub" and not data["hub_id"]:
        raise ConfigError(f"data.path is not set: VTAB-1k has no canonical hub dataset; set data.path=<dir> "
                          f"of the pre-split VTAB-1k folders (<dir>/{task['dataset']}/{' '.join(lists)})")
    if data["source"] == "path":
        root = Path(data["path"])
        if not any(all((folder / f).is_file() for f in lists) for folder in (root / task["dataset"], root)):
            raise ConfigError(f"data.path={data['path']!r} lacks the VTAB-1k lists {' '.join(lists)} for "
                              f"{task['dataset']} (looked in {task['dataset']}/ and .)")


def resolve(cfg: DictConfig) -> RunSpec:
    """Validate ``cfg`` and fold it into a RunSpec; raises ConfigError naming the offending key."""
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # Hydra's node needs a live job
    c = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    model, peft, task, trainer, data, logger = (c[k] for k in ("model", "peft", "task", "trainer", "data",
                                                                "logger"))
    d, density = c["d"], c["density"]
    if d < 1:
        raise ConfigError(f"d={d} must be an integer >= 1 (number of masked branches)")
    if not 0.0 < density <= 1.0:
        raise ConfigError(f"density={density} must be in (0, 1] (fraction of ones in each mask)")
    _choice("mask", c["mask"], MASKS)
    _choice("peft.method", peft["method"], METHODS)
    _choice("peft.init", peft["init"], ("peft", "official"))
    _choice("task.family", task["family"], tuple(PROTOCOLS))
    _choice("task.protocol", task["protocol"], PROTOCOLS[task["family"]])
    _choice("task.report", task["report"], REPORT_RULES[task["family"]])
    _positive("task.eval_every", task["eval_every"], integer=True)
    _choice("model.kind", model["kind"], MODEL_KINDS)
    _choice("trainer.precision", trainer["precision"], PRECISIONS)
    _choice("trainer.device", trainer["device"], DEVICES)
    if trainer["use_cpu"] and trainer["device"] == "cuda":
        raise ConfigError("trainer.use_cpu=true contradicts trainer.device=cuda (use trainer.device=cpu)")
    _choice("logger.name", logger["name"], LOGGERS)
    _choice("logger.mode", logger["mode"], WANDB_MODES)
    if not 0.0 <= peft["dropout"] < 1.0:
        raise ConfigError(f"peft.dropout={peft['dropout']} must be in [0, 1)")
    for key in ("epochs", "lr", "max_grad_norm"):
        _positive(f"trainer.{key}", trainer[key])
    for key in ("batch_size", "max_seq_length", "doc_stride", "max_steps", "grad_accum", "eval_batch_size",
                "logging_steps", "save_total_limit"):
        _positive(f"trainer.{key}", trainer[key], integer=True)
    for key in ("train_limit", "eval_limit"):
        _positive(f"data.{key}", data[key], integer=True)
    for key in ("r", "reduction_factor", "prefix_length", "prefix_hidden"):
        _positive(f"peft.{key}", peft[key], integer=True)

    modality = MODALITY[task["family"]]
    if modality not in model["families"]:
        raise ConfigError(f"model={model['name']} has no {modality} variant but task={task['name']} needs "
                          f"{modality}; models for {modality}: see conf/model/")
    fam = model["families"][modality]
    method = peft["method"]
    if method not in FAMILY_METHODS.get(fam, ()):
        raise ConfigError(f"peft={peft['name']}: method {method!r} is not supported on model={model['name']} "
                          f"(family {fam}); supported: {', '.join(FAMILY_METHODS.get(fam, ()))}")
    if task["family"] == "squad" and task["dataset"] not in ("v1", "v2"):
        raise ConfigError(f"task.dataset={task['dataset']!r} must be v1 or v2 for squad")

    if data["path"] is not None:
        if not Path(data["path"]).exists():
            raise ConfigError(f"data.path={data['path']!r} does not exist")
        data["source"] = "path"
    else:
        _choice("data.source", data["source"], DATA_SOURCES)
    check_vtab_source(task, data)
    if model["path"] is not None and not Path(model["path"]).exists():
        raise ConfigError(f"model.path={model['path']!r} does not exist")

    if not peft["capaboost"]:  # vanilla PEFT: one branch, dense
        d, density = 1, 1.0
    mask = c["mask"]
    if mask == "nm" and abs(density * 4 - round(density * 4)) > 1e-9:
        raise ConfigError(f"mask=nm needs density * 4 to be whole (N:4 structure), got density={density}")
    c["d"], c["density"] = d, density

    recipe = dict(c["recipe"][method])
    overrides = {k: trainer[k] for k in ("epochs", "lr", "batch_size", "max_seq_length", "doc_stride",
                                         "warmup_ratio", "warmup_steps", "weight_decay")}
    overrides.update({k: peft[k] for k in ("r", "alpha", "reduction_factor", "prefix_length",
                                           "prefix_hidden")})
    hparams = {**recipe, **{k: v for k, v in overrides.items() if v is not None}}
    hparams.update(max_steps=trainer["max_steps"], grad_accum=trainer["grad_accum"],
                   precision=trainer["precision"], max_grad_norm=trainer["max_grad_norm"],
                   lr_scheduler=trainer["lr_scheduler"])
    if hparams["batch_size"] % trainer["grad_accum"]:
        raise ConfigError(f"trainer.grad_accum={trainer['grad_accum']} must divide the batch size "
                          f"{hparams['batch_size']}")
    if not 0.0 <= hparams["warmup_ratio"] < 1.0:
        raise ConfigError(f"warmup_ratio={hparams['warmup_ratio']} must be in [0, 1)")

    cb = {"method": method, "d": d, "density": density, "mask": mask, "seed": c["mask_seed"],
          "r": hparams["r"], "alpha": hparams["alpha"], "dropout": peft["dropout"], "init": peft["init"],
          "reduction_factor": hparams["reduction_factor"], "prefix_length": hparams["prefix_length"],
          "prefix_hidden": hparams["prefix_hidden"],
          "target_modules": peft["target_modules"]}

    # Hash resolved values only: `peft.r=8` on the command line and a recipe's r=8 are the same run.
    raw = ("recipe", "d", "density", "mask", "mask_seed", "peft", "trainer")
    hashed = {k: v for k, v in c.items() if k not in _NOT_HASHED + raw}
    hashed.update(peft=peft["name"], capaboost=cb, hparams=hparams)
    hashed["trainer"] = {k: v for k, v in trainer.items() if k not in overrides and k not in (
        "progress", "logging_steps", "num_workers", "save_total_limit", "device")}
    readable = f"d{d}_p{_fmt(density)}_{mask}_s{c['seed']}_m{c['mask_seed']}"
    run_dir = (Path(c["runs_root"]) / task["name"] / model["name"] / peft["name"]
               / f"{readable}-{_digest(hashed)}")
    grouped = {k: v for k, v in hashed.items() if k != "seed"}
    return RunSpec(task=task["name"], family=task["family"], dataset=task["dataset"],
                   protocol=task["protocol"],
                   main_metric=task["main_metric"], modality=modality, model=model["name"], model_family=fam,
                   peft=peft["name"], method=method, capaboost=bool(peft["capaboost"]), d=d, density=density,
                   mask=mask, seed=c["seed"], mask_seed=c["mask_seed"], hparams=hparams, capaboost_config=cb,
                   config=c, run_dir=str(run_dir), force=bool(c["force"]),
                   group=f"{task['name']}/{model['name']}/{peft['name']}/d{d}_p{_fmt(density)}_{mask}"
                   f"_m{c['mask_seed']}-{_digest(grouped)}")
