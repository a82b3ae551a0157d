"""Deprecated alias of ``capaboost.backbones`` ("family" now names a task suite in tasks/)."""
from .backbones import BACKBONES as FAMILIES  # noqa: F401
from .backbones import UNKNOWN, adapter_sites, detect, match_suffix, present_heads  # noqa: F401
from .backbones import Backbone as Family  # noqa: F401
