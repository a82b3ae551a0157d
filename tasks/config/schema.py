"""The typed config schema, registered as Hydra's ``base_config``: a misspelt key or a wrong type fails
at compose time, and the YAML files under conf/ hold only what differs from these defaults."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from capaboost.config import CapaBoostConfig


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
    vocab_size: int | None = None         # tiny text: cap of the locally built word vocabulary


@dataclass
class PeftConf:
    name: str = MISSING
    # lora | padapter | prefix | a baseline (tasks/training/baselines.py)
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
    lr: float = MISSING
    epochs: float = MISSING
    batch_size: int = MISSING
    max_seq_length: int = 128
    doc_stride: int = 128
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    r: int = CapaBoostConfig.r            # the method's own defaults, stated once (capaboost/config.py)
    alpha: float = CapaBoostConfig.alpha
    reduction_factor: int = CapaBoostConfig.reduction_factor
    prefix_length: int = CapaBoostConfig.prefix_length
    prefix_hidden: int = CapaBoostConfig.prefix_hidden
    protocol: str | None = None           # this method's task.protocol where the authors' differ by method
                                          # (a recipe sets task.protocol: ${recipe.${peft.method}.protocol})


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

    from tasks.config.tasks import tasks_resolver

    OmegaConf.register_new_resolver("job_name", job_name, replace=True)
    OmegaConf.register_new_resolver("tasks", tasks_resolver, replace=True)


def register() -> None:
    """Make the schema available to Hydra as ``base_config``, the task options (tasks.config.tasks), and
    the resolvers."""
    from hydra.core.config_store import ConfigStore

    from tasks.config.tasks import register_tasks

    ConfigStore.instance().store(name="base_config", node=Config)
    register_tasks()
    register_resolvers()


register_resolvers()
