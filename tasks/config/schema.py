"""The typed config schema, registered as Hydra's ``base_config``: a misspelt key or a wrong type fails
at compose time. Every default lives here once, with its reason; the YAML files under conf/ hold only
what differs from it, and everything else (the runner, reporting) reads it from here.

``None`` in a recipe-supplied key (``trainer.lr``, ``trainer.epochs``, ..., ``peft.r``, ``peft.alpha``, ...;
the keys ``MethodRecipe`` also has: ``TRAINER_FROM_RECIPE``, ``PEFT_FROM_RECIPE``) means "take
``recipe.<method>.<key>``", the recipe of the run's method (a PEFT-library baseline: LoRA's). The recipe
is merged in this order, later wins: ``MethodRecipe``'s defaults below, the model's recipe
(conf/model/<model>.yaml), the task's (conf/recipe/<model>/<family>/<task>.yaml), then a value set on the
command line (``trainer.lr=1e-4``)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import MISSING

from capaboost.config import CapaBoostConfig

# A tiny text model's vocabulary cap (model.vocab_size=None takes it; resolve records the value used): its
# word tokenizer keeps this many of the task's most frequent training words, special tokens included (the
# fixtures have fewer): enough for smoke tests, with an embedding that stays small on CPU.
TINY_VOCAB = 2000


@dataclass
class ModelConf:
    name: str = MISSING
    kind: str = "hf"                      # hf | timm | tiny | minilm
    hub_id: str | None = None             # transformers hub id, or timm model name
    path: str | None = None               # local save_pretrained dir (timm: checkpoint file)
    backbones: dict[str, str] = field(default_factory=dict)  # modality -> backbone (capaboost's name)
    hidden_size: int | None = None        # tiny only
    num_layers: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    image_size: int | None = None         # images: input resolution
    patch_size: int | None = None
    vocab_size: int | None = None         # tiny text: cap of the built word vocabulary (None: TINY_VOCAB)


@dataclass
class PeftConf:
    name: str = MISSING
    # lora | padapter | prefix | a baseline (tasks/config/methods.py)
    method: str = MISSING
    capaboost: bool = True                # False: vanilla, d=1 and density=1 whatever the top level says
    r: int | None = None                  # None: the recipe's value
    alpha: float | None = None
    reduction_factor: int | None = None
    prefix_length: int | None = None
    prefix_hidden: int | None = None
    dropout: float = CapaBoostConfig.dropout  # LoRA only (per-branch input dropout)
    init: str = CapaBoostConfig.init      # peft | official (LoRA A init)
    target_modules: list[str] | None = None
    modules_to_save: list[str] | None = None  # None: the backbone's task heads (capaboost.backbones)
    options: dict[str, Any] = field(default_factory=dict)  # baselines only: more PEFT config arguments


@dataclass
class TaskConf:
    name: str = MISSING                   # glue/cola
    family: str = MISSING                 # glue | squad | vtab | math
    dataset: str = MISSING                # cola | v1 | cifar
    protocol: str = MISSING
    main_metric: str = MISSING
    eval_every: int | None = 1            # epochs between evaluation rounds; None: after the last epoch only
    report: str = "best_select_epoch"     # the evaluated epoch reported as "best" (config.REPORT_RULES)
    eval_every_steps: int | None = None   # generation tasks (math): validate every N optimizer steps
    switches: dict[str, bool] = field(default_factory=dict)  # named departures from the protocol (math)


@dataclass
class TrainerConf:
    # epochs .. weight_decay: None takes recipe.<method>.<key> (module docstring; defaults: MethodRecipe)
    epochs: float | None = None
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
    precision: str = "auto"               # auto (bf16/fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    device: str = "auto"                  # auto | cuda | cpu (tasks/training/device.py)
    max_grad_norm: float = 1.0
    # true_norm | official (d copies in the norm: tasks/training/clipping.py)
    clip: str = "true_norm"
    lr_scheduler: str = "linear"
    logging_steps: int = 50
    save_total_limit: int = 2             # complete checkpoints kept (tasks.cluster.checkpoints rotates them)
    save_every_steps: int | None = None   # also checkpoint every N steps inside long epochs (MNLI, QQP)
    save_every_minutes: float | None = None
    wait_for_lock: bool = False           # another live trainer holds the run dir: wait instead of exiting
    num_workers: int = 0
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~1/3 more compute
    use_cpu: bool = False                 # older spelling of device=cpu
    progress: bool = True                 # tqdm bars on a terminal; elsewhere one line per progress_every_s
    progress_every_s: float = 60.0        # (a SLURM log, a pipe: tasks/training/progress.py)


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
    """One method's hyperparameters. These defaults are the fallback for (model, task) pairs that no
    recipe file covers, RoBERTa-base GLUE-like values (docs/paper.md, Recipes); the model's and the task's
    recipe files replace them where the paper or the authors' code give values."""
    lr: float = 5.0e-4                    # the authors' RoBERTa-base LoRA and adapter lr (prefix: RecipeConf)
    epochs: float = 20                    # the most common RoBERTa-base GLUE epoch count in their scripts
    batch_size: int = 32                  # assumed: fits one small GPU (their RoBERTa-base scripts use 128)
    max_seq_length: int = 128             # their RoBERTa-base GLUE scripts' max_seq_length
    doc_stride: int = 128                 # SQuAD windows (run_qa.py's default); unused elsewhere
    warmup_ratio: float = 0.1             # their RoBERTa-base GLUE scripts' warmup ratio
    warmup_steps: int = 0                 # > 0 replaces warmup_ratio (their DeBERTa and SQuAD scripts)
    weight_decay: float = 0.1             # their RoBERTa-base GLUE scripts' weight decay
    r: int = CapaBoostConfig.r            # the method's own defaults, stated once (capaboost/config.py)
    alpha: float = CapaBoostConfig.alpha
    reduction_factor: int = CapaBoostConfig.reduction_factor
    prefix_length: int = CapaBoostConfig.prefix_length
    prefix_hidden: int = CapaBoostConfig.prefix_hidden
    protocol: str | None = None           # this method's task.protocol where the authors' differ by method
                                          # (a recipe sets task.protocol: ${recipe.${peft.method}.protocol})


def _prefix_recipe() -> MethodRecipe:
    """The prefix's fallback: lr 1e-4 and 64 virtual tokens, the values of the authors' RoBERTa-base prefix
    script (scripts/run_prefix.sh:86, :44; docs/paper.md, Recipes)."""
    return MethodRecipe(lr=1.0e-4, prefix_length=64)


@dataclass
class RecipeConf:
    lora: MethodRecipe = field(default_factory=MethodRecipe)
    padapter: MethodRecipe = field(default_factory=MethodRecipe)
    prefix: MethodRecipe = field(default_factory=_prefix_recipe)


def _from_recipe(section: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(section) if f.name in {g.name for g in fields(MethodRecipe)})


# The keys whose None means "take recipe.<method>.<key>" (module docstring), in the section's order.
TRAINER_FROM_RECIPE = _from_recipe(TrainerConf)
PEFT_FROM_RECIPE = _from_recipe(PeftConf)


@dataclass
class Config:
    model: ModelConf = field(default_factory=ModelConf)
    peft: PeftConf = field(default_factory=PeftConf)
    task: TaskConf = field(default_factory=TaskConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    data: DataConf = field(default_factory=DataConf)
    logger: LoggerConf = field(default_factory=LoggerConf)
    recipe: RecipeConf = field(default_factory=RecipeConf)
    d: int = CapaBoostConfig.d            # CapaBoost branches (vanilla lora|padapter|prefix: d=1, density=1)
    density: float = CapaBoostConfig.density  # fraction of ones in each mask
    mask: str = CapaBoostConfig.mask      # random | nm | same | none
    seed: int = 42                        # training seed (head init, LoRA init, data order, dropout)
    mask_seed: int = 0                    # CapaBoost mask seed, independent of the training seed
    force: bool = False                   # re-run even if result.json exists
    runs_root: str = "results/runs"


def job_name(sweep: str | None) -> str:
    """The SLURM job name of a sweep's array (``hydra.launcher.name``): the sweep's name, so that
    ``squeue`` tells sweeps apart (Hydra's default is the script's name, ``run``, for every job)."""
    return f"{sweep}" if sweep else "capaboost"


def register_resolvers() -> None:
    """``${job_name:...}`` (conf/hydra/launcher/slurm.yaml) and ``${tasks:<family>}`` (sweeps). Also done
    on import, so that any process that reads a launcher config (a submitit job unpickling its call
    included) can resolve it."""
    from omegaconf import OmegaConf

    from tasks.config.task_options import tasks_resolver

    OmegaConf.register_new_resolver("job_name", job_name, replace=True)
    OmegaConf.register_new_resolver("tasks", tasks_resolver, replace=True)


def register() -> None:
    """Make the schema available to Hydra as ``base_config``, the task options
    (tasks.config.task_options), and the resolvers."""
    from hydra.core.config_store import ConfigStore

    from tasks.config.task_options import register_tasks

    ConfigStore.instance().store(name="base_config", node=Config)
    register_tasks()
    register_resolvers()


register_resolvers()
