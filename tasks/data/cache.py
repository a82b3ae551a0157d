"""Local text files (GLUE TSVs, SQuAD JSON) parsed once, then memory-mapped like hub data.

A dataset parsed from files lives in memory, so ``datasets``' map cache (which writes results beside a
dataset's Arrow files) cannot keep its tokenisation, and every run re-parses and re-tokenises: minutes
for MNLI or SQuAD. Here the parsed DatasetDict is saved once as Arrow under the datasets cache, keyed by
the files' contents, and every run loads that copy: its fingerprints are the saved ones, so ``map``
finds the tokenised features a previous run with the same tokenizer and settings wrote, as it does for
``load_dataset``. A user's own ``save_to_disk`` directory is already Arrow and needs none of this.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets

FORMAT = 1  # bump when a parser's output changes, so older copies are not reused
_CHUNK = 1 << 20


def cache_root() -> Path:
    """``$HF_DATASETS_CACHE/capaboost_local`` (read at call time: runs and tests may redirect it)."""
    return Path(os.environ.get("HF_DATASETS_CACHE") or datasets.config.HF_DATASETS_CACHE) / "capaboost_local"


def content_key(name: str, files: Sequence[Path]) -> str:
    digest = hashlib.sha256(f"{name}\0{FORMAT}".encode())
    for path in files:
        digest.update(b"\0" + path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while block := handle.read(_CHUNK):
                digest.update(block)
    return f"{name}-{digest.hexdigest()[:16]}"


def cached(name: str, files: Sequence[Path],
           build: Callable[[], datasets.DatasetDict]) -> datasets.DatasetDict:
    """``build()`` (which parses ``files``) at most once per content of ``files``; then the saved copy."""
    if not all(path.is_file() for path in files):
        return build()  # let the parser name what is missing
    target = cache_root() / content_key(name, files)
    if not (target / "dataset_dict.json").is_file():
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build().save_to_disk(str(tmp))
        try:
            os.replace(tmp, target)  # whole directory at once; readers never see a partial copy
        except OSError:  # another process saved the same content first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(target))
