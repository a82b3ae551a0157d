"""VTAB-1k from the pre-split image-list folders (the NOAH / VPT ``vtab-1k`` release), the hub or fixtures.

Folder layout, one folder per dataset (names as in ``tasks.facts.vtab.VTAB``)::

    <root>/<name>/train800.txt  val200.txt  train800val200.txt  test.txt  images/...

Each list line is ``<path relative to <root>/<name>> <integer label>`` (e.g. ``images/train/0.png 12``);
we split on the LAST whitespace so paths may contain spaces. ``root`` may also be the dataset folder itself.

Protocols: "tune" = train800 / val200 / val200 (hyper-parameter search), "final" = train800val200 / test /
test (the numbers VTAB-1k papers report; the official CapaBoost release has no VTAB code, so selection on
test under "final" mirrors the common NOAH/VPT practice of reporting the last or best test epoch).

Hub (best effort, no canonical VTAB-1k hub dataset exists): ``hub_id`` names a dataset (``{name}`` is
replaced by the VTAB name) whose splits are named like the lists above and whose columns are ``image`` and
``label``.
"""
from __future__ import annotations

from pathlib import Path

import datasets

from tasks.data import features, fixtures
from tasks.facts.vtab import PROTOCOLS, VTAB


def read_image_list(name: str, folder: Path, split: str) -> datasets.Dataset:
    """One ``<split>.txt`` as a Dataset of lazily decoded RGB images and int labels."""
    list_file = folder / f"{split}.txt"
    if not list_file.is_file():
        raise ValueError(f"source: {list_file} not found (VTAB-1k image-list layout)")
    num_classes = VTAB[name].num_classes
    paths, labels = [], []
    for line_no, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{list_file}:{line_no}: expected '<relative path> <label>', got {line!r}")
        label = int(parts[1])
        if not 0 <= label < num_classes:
            raise ValueError(f"{list_file}:{line_no}: label {label} outside [0, {num_classes}) for {name}")
        image = folder / parts[0]
        if not image.is_file():
            raise ValueError(f"{list_file}:{line_no}: image {image} not found")
        paths.append(str(image.resolve()))
        labels.append(label)
    if not paths:
        raise ValueError(f"{list_file}: empty list")
    return datasets.Dataset.from_dict({"image": paths, "label": labels}, features=features.vtab(name))


def dataset_folder(name: str, root: Path) -> Path:
    """The folder of ``name``'s image lists: ``root/<name>`` or ``root`` itself."""
    for candidate in (root / name, root):
        if (candidate / "train800.txt").is_file() or (candidate / "train800val200.txt").is_file():
            return candidate
    raise ValueError(f"source: no VTAB-1k image lists for {name!r} under {root} (looked in {name}/ and .)")


def _hub_split(hub_id: str, split: str) -> datasets.Dataset:
    return datasets.load_dataset(hub_id, split=split)


def load_vtab(name: str, source: str | Path = "hub", protocol: str = "tune", seed: int = 42,
              hub_id: str | None = None) -> datasets.DatasetDict:
    """VTAB-1k ``name`` as train/select/report with columns image (PIL RGB) and label (int).

    ``seed`` is accepted for interface symmetry; VTAB-1k's lists are fixed, so nothing is shuffled here.
    """
    if name not in VTAB:
        raise ValueError(f"name must be one of {sorted(VTAB)}, got {name!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {tuple(PROTOCOLS)}, got {protocol!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not isinstance(source, str | Path) or not str(source):
        raise ValueError(f"source must be 'hub', 'fixture' or a local path, got {source!r}")
    roles = PROTOCOLS[protocol]
    needed = tuple(dict.fromkeys(roles))
    if source == "fixture":
        raw = fixtures.vtab_raw(name)
        lists = {split: raw[split] for split in needed}
    elif source == "hub":
        if not hub_id:
            raise ValueError("hub_id: VTAB-1k has no canonical hub dataset; pass hub_id "
                             "(e.g. 'org/vtab-{name}') or a local image-list folder as source")
        repo = hub_id.format(name=name)
        lists = {split: _hub_split(repo, split).cast_column("image", datasets.Image(mode="RGB"))
                 for split in needed}
    else:
        root = Path(source)
        if not root.exists():
            raise ValueError(f"source: local path {str(source)!r} does not exist (or use 'hub' / 'fixture')")
        folder = dataset_folder(name, root)
        lists = {split: read_image_list(name, folder, split) for split in needed}
    for split, ds in lists.items():
        missing = {"image", "label"} - set(ds.column_names)
        if missing:
            raise ValueError(f"VTAB {name} {split}: missing column(s) {sorted(missing)}")
    train, select, report = (lists[r] for r in roles)
    return datasets.DatasetDict({"train": train, "select": select, "report": report})
