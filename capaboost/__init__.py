"""CapaBoost (ICLR 2024): d static random masks over one shared PEFT weight.

    import capaboost
    model = capaboost.apply(model, capaboost.CapaBoostConfig(method="lora", d=2, density=0.5))
"""
from . import analysis, masks
from .adapter import MaskedBottleneck, PfeifferMlp, PfeifferOutput
from .config import CapaBoostConfig
from .digest import mask_digest
from .io import export_peft, load, save
from .lora import LoRALinear
from .model import apply, count_parameters, merge, peft_modules, unmerge

__all__ = ["CapaBoostConfig", "apply", "count_parameters", "merge", "unmerge", "save", "load",
           "export_peft", "masks", "analysis", "LoRALinear", "MaskedBottleneck", "PfeifferOutput",
           "PfeifferMlp", "peft_modules", "mask_digest"]
__version__ = "0.1.0"
