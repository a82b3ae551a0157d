"""VTAB-1k's facts: the 19 datasets (their one address: task configs, sweeps, tables and preflight read
them from here), label spaces, groups, table labels, protocols and sizes.

Names are the folder names of the pre-split ``vtab-1k`` image-list release used by NOAH and VPT (``cifar``
is CIFAR-100, ``kitti`` is KITTI closest-vehicle distance, ``dsprites_loc``/``dsprites_ori`` are dSprites
x-position/orientation, ``smallnorb_azi``/``smallnorb_ele`` are smallNORB azimuth/elevation,
``clevr_count``/``clevr_dist`` are CLEVR count/closest-object distance). Each folder holds the image lists
train800, val200, train800val200 (= both) and test.
"""
from __future__ import annotations

from dataclasses import dataclass

from tasks.facts.common import Selection, Suite


@dataclass(frozen=True)
class VtabSchema:
    num_classes: int
    group: str   # "natural" | "specialized" | "structured"
    label: str   # the name a table prints
    test: int    # images in test.txt


_SPEC = {  # group -> name -> (classes, table label, test images); the paper's column order
    "natural": {"cifar": (100, "CIFAR-100", 10000), "caltech101": (102, "Caltech101", 6084),
                "dtd": (47, "DTD", 1880), "oxford_flowers102": (102, "Flowers102", 6149),
                "oxford_iiit_pet": (37, "Pets", 3669), "svhn": (10, "SVHN", 26032),
                "sun397": (397, "Sun397", 21750)},
    "specialized": {"patch_camelyon": (2, "Camelyon", 32768), "eurosat": (10, "EuroSAT", 5400),
                    "resisc45": (45, "Resisc45", 6300), "diabetic_retinopathy": (5, "Retinopathy", 42670)},
    "structured": {"clevr_count": (8, "Clevr-Count", 15000), "clevr_dist": (6, "Clevr-Dist", 15000),
                   "dmlab": (6, "DMLab", 22735), "kitti": (4, "KITTI-Dist", 711),
                   "dsprites_loc": (16, "dSpr-Loc", 73728), "dsprites_ori": (16, "dSpr-Ori", 73728),
                   "smallnorb_azi": (18, "sNORB-Azim", 12150), "smallnorb_ele": (9, "sNORB-Elev", 12150)},
}
VTAB: dict[str, VtabSchema] = {name: VtabSchema(n, group, label, test)
                               for group, spec in _SPEC.items() for name, (n, label, test) in spec.items()}
GROUPS: tuple[str, ...] = tuple(_SPEC)
# The image-list files of one dataset folder, and their sizes (test: VtabSchema.test).
LISTS = ("train800", "val200", "train800val200", "test")
LIST_SIZES = {"train800": 800, "val200": 200, "train800val200": 1000}
# Each protocol's lists as (train, select, report): "tune" searches hyper-parameters on val200, "final"
# trains on all 1,000 examples and reports test.
PROTOCOLS = {"tune": ("train800", "val200", "val200"), "final": ("train800val200", "test", "test")}


def list_size(name: str, split: str) -> int:
    """Examples in one image list of dataset ``name``."""
    return VTAB[name].test if split == "test" else LIST_SIZES[split]


SUITE = Suite(family="vtab", modality="image", tasks=tuple(VTAB), main_metric=dict.fromkeys(VTAB, "accuracy"),
              selection=dict.fromkeys(VTAB, Selection(("accuracy",))), protocols=tuple(PROTOCOLS),
              protocol="final",
              # final_epoch, or the best evaluated epoch ON TEST (the select split is test under "final")
              report_rules=("final_epoch", "best_test_epoch"))
