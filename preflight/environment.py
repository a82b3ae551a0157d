"""Can the run start here? Its data source is set (and, for a local path, laid out as the loader
expects) and the packages its tokenizer / image transform need are importable.

Both are checked the way the run would fail, but in a second and without the hub: a missing
``sentencepiece`` otherwise surfaces only after the model download, as transformers' fallback error.
"""
from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from typing import Any

from preflight import facts


def importable(module: str) -> bool:
    """True if ``module`` imports (a broken install counts as missing)."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 -- any import failure means the run would fail the same way
        return False
    return True


def tokenizer_problem(model_cfg: dict[str, Any]) -> str | None:
    """None, or one line naming the tokenizer class and the packages it lacks."""
    if model_cfg["kind"] == "tiny":
        return None  # built in-process from the task's text (tokenizers only, a core dependency)
    tok = facts.architecture(model_cfg["name"])["tokenizer"]
    missing = [p for p in tok["packages"] if not importable(p)]
    if not missing:
        return None
    pip = {"google.protobuf": "protobuf", "PIL": "pillow"}
    return (f"model={model_cfg['name']}: {tok['class']} needs {', '.join(missing)} "
            f"(pip install {' '.join(pip.get(m, m) for m in missing)})")


def data_problem(spec: Any) -> str | None:
    """None, or one line saying why the run has no usable data source."""
    data = spec.config["data"]
    if data["source"] == "fixture":
        return None
    if data["source"] == "hub":
        if spec.family == "vtab" and not data["hub_id"]:
            return ("no data source: VTAB-1k has no canonical hub dataset; set data.path=<the vtab-1k "
                    "folder with <name>/train800val200.txt, test.txt, images> (or data.hub_id)")
        # GLUE / SQuAD hub ids are fixed in tasks/facts/{glue,squad}.py; downloads are not checked offline
        return None
    return _local_problem(spec.family, spec.dataset, spec.protocol, str(data["path"]))


@cache
def _local_problem(family: str, dataset: str, protocol: str, path: str) -> str | None:
    """A local copy, read by the run's own loader (splits and columns checked there), once per dataset."""
    from tasks.data import load as data

    if not Path(path).exists():
        return f"data.path={path!r} does not exist"
    try:
        if family == "glue":
            data.load_glue(dataset, path, protocol)
        elif family == "squad":
            data.load_squad(dataset, path)
        elif family == "math":
            data.load_math(path)
        else:
            data.load_vtab(dataset, path, protocol)
    except (ValueError, OSError) as error:
        return f"data.path={path!r}: {error}"
    return None
