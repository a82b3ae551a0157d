"""``make prefetch NAME=<sweep> [ARGS=...]``: every distinct model and dataset a sweep needs, downloaded
once into the HF cache where the hub is reachable (the login node), then loaded again with the hub off.

Jobs then run with ``HF_HUB_OFFLINE=1``: no array task downloads, so 64 tasks starting at once do not
fetch one model 64 times into one cache. Each need is loaded by the runner's own loaders
(``tasks.training.models``, ``tasks.data.load``), so "loads offline" means what a job will do. The content
digest of
each official dataset split is recorded (``tasks.data.digests``): the tables recognise a ``data.path`` copy
of those splits by it.

Exit 0: everything loads offline; 1: something is missing (one line each, with the fix); 2: bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from preflight import environment
from tasks import ROOT


@dataclass(frozen=True)
class Need:
    kind: str          # "model" | "dataset"
    name: str          # the hub id (datasets: "<id>/<config>" for GLUE): what is fetched, and its record key
    loader: str        # "text" | "image" (models); "glue" | "squad" | "vtab" (datasets)
    arg: str           # models: the model config as JSON; datasets: the task (cola, v1, a VTAB name)
    hub_id: str = ""   # VTAB from the hub: the data.hub_id pattern

    def fix(self, sweep: str) -> str:
        local = "model.path=<a save_pretrained copy>" if self.kind == "model" else "data.path=<a local copy>"
        return (f"run `make prefetch NAME={sweep}` where the hub is reachable (the login node) with the "
                f"jobs' HF_HOME, or set {local}")


def needs_of(spec: Any) -> list[Need]:
    """What one run downloads: its model (unless model.path, a pip-shipped or a tiny one) and its hub
    dataset (unless data.path or fixtures)."""
    from tasks.facts import glue, squad

    model, data, out = spec.config["model"], spec.config["data"], []
    if not model.get("path") and model["kind"] in ("hf", "timm"):
        name = model["hub_id"] if model["kind"] == "hf" else f"timm/{model['hub_id']}"
        out.append(Need("model", name, "text" if model["kind"] == "hf" else "image",
                        json.dumps(model, sort_keys=True)))
    if data["source"] == "hub":
        if spec.family == "glue":
            out.append(Need("dataset", f"{glue.HUB_ID}/{spec.dataset}", "glue", spec.dataset))
        elif spec.family == "squad":
            out.append(Need("dataset", squad.HUB_ID[spec.dataset], "squad", spec.dataset))
        elif data["hub_id"]:
            out.append(Need("dataset", data["hub_id"].format(name=spec.dataset), "vtab", spec.dataset,
                            data["hub_id"]))
    return out


def load(need: Need) -> dict[str, Any]:
    """Load ``need`` as a run would (downloading it unless the hub is off); datasets: rows and digest
    of each split."""
    from tasks.data import load as data
    from tasks.data.digests import split_digests
    from tasks.training import models

    if need.kind == "model":
        cfg = json.loads(need.arg)
        models.load_text(cfg, "seq_cls", 2) if need.loader == "text" else models.load_image(cfg, 2)
        return {}
    if need.loader == "vtab":
        from tasks.facts import vtab

        for protocol in vtab.PROTOCOLS:
            data.load_vtab(need.arg, "hub", protocol, hub_id=need.hub_id)
        return {}
    raw = data.raw_dataset(need.loader, need.arg, "hub")
    return {"rows": {s: len(raw[s]) for s in raw}, "digests": split_digests(raw)}


def download(need: Need) -> None:
    """Fetch ``need`` into the HF cache (the hub must be on)."""
    load(need)


def check_offline(needs: list[Need]) -> dict[str, dict[str, Any]]:
    """Load every need again in a fresh process with the hub off, as a job would:
    {name: {"error": one line or None, "rows": ..., "digests": ...}}."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "preflight.prefetch", "--check"], input=json.dumps(
        [asdict(n) for n in needs]), capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {n.name: {"error": f"the offline check did not run: {tail}"} for n in needs}
    return json.loads(lines[-1])


def _check_main() -> int:
    """The child of ``check_offline``: needs as JSON on stdin, results as one JSON line on stdout."""
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    out = {}
    for need in (Need(**n) for n in json.loads(sys.stdin.read())):
        try:
            out[need.name] = {"error": None, **load(need)}
        except Exception as error:  # noqa: BLE001 -- any failure to load is what a job would hit
            out[need.name] = {"error": one_line(error)}
    print(json.dumps(out))
    return 0


def one_line(error: Any) -> str:
    """The error's first sentence, on one line."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = text.split(". ")[0].rstrip(".")
    return text if len(text) <= 240 else text[:237] + "..."


def hub_unreachable(timeout: float = 10.0) -> str | None:
    """None, or why the hub cannot be reached from here (asked once, not per item)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE=1 is set"
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as error:
        return f"{constants.ENDPOINT} is unreachable ({one_line(getattr(error, 'reason', error))})"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--check"]:
        return _check_main()
    p = argparse.ArgumentParser(prog="prefetch", description=__doc__.split("\n")[0])
    p.add_argument("name", help="sweep name (sweeps/<name>.yaml), 'paper' or 'all'")
    p.add_argument("overrides", nargs="*", help="Hydra overrides (<sweep>:<override> for one sweep)")
    args = p.parse_intermixed_args(argv)
    from tasks.config.sweeps import distinct_runs, sweep_names
    from tasks.data import digests

    try:
        found = distinct_runs(sweep_names(args.name), args.overrides)
    except (ValueError, FileNotFoundError) as error:
        print(f"prefetch: {one_line(error)}", file=sys.stderr)
        return 2
    needs: dict[str, Need] = {}
    problems: list[str] = []
    for _, _, spec in found["runs"].values():
        for need in needs_of(spec):
            needs.setdefault(need.name, need)
        problem = environment.tokenizer_problem(spec.config["model"])
        if problem and problem not in problems:
            problems.append(problem)
    for sweep, errors in found["failed"].items():
        problems.append(f"sweep {sweep}: {len(errors)} runs do not compose, so their needs are unknown: "
                        f"{errors[0][1]}")
    models = sum(n.kind == "model" for n in needs.values())
    print(f"prefetch {args.name}: {len(found['runs'])} distinct runs need {models} model(s) and "
          f"{len(needs) - models} dataset(s)")
    offline = hub_unreachable()
    failed: dict[str, str] = {}
    if offline:
        print(f"the hub cannot be reached ({offline}): checking what the cache already holds")
    else:
        for need in needs.values():
            start = time.time()
            try:
                download(need)
            except Exception as error:  # noqa: BLE001 -- named in one line below, with the fix
                failed[need.name] = one_line(error)
                continue
            print(f"fetched {need.kind} {need.name} ({time.time() - start:.0f} s)")
    checked = check_offline([n for n in needs.values() if n.name not in failed]) if needs else {}
    record = {}
    for need in needs.values():
        result = checked.get(need.name, {"error": failed.get(need.name)})
        why = failed.get(need.name) or result.get("error")
        if why:
            problems.append(f"missing {need.kind} {need.name}: {why}; fix: {need.fix(args.name)}")
            continue
        if "digests" in result:
            record[need.name] = result["digests"]
            splits = ", ".join(f"{s} {result['rows'][s]:,} rows {d}" for s, d in result["digests"].items())
            print(f"loads offline: {need.kind} {need.name} ({splits})")
        else:
            print(f"loads offline: {need.kind} {need.name}")
    if record:
        digests.record(record)
        print(f"split digests of {len(record)} dataset(s) recorded in {digests.OFFICIAL}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
