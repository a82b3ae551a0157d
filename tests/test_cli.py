"""run.py end to end on the offline presets: the mission command, bad input, every task family x PEFT."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runs import ROOT, run, spec_for

CONTRACT_KEYS = ("task", "model", "peft", "method", "capaboost", "d", "density", "mask", "seed", "mask_seed",
                 "metrics", "best", "best_epoch", "selection", "main_metric", "params", "status",
                 "runtime_s", "git_sha", "versions", "config", "world_size", "per_device_batch_size",
                 "grad_accum", "run_dir")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline",
       "TOKENIZERS_PARALLELISM": "false"}
# Runs run.py as __main__, then reports whether torch was ever imported (i.e. whether a model could exist).
PROBE = ("import runpy, sys\nsys.argv = ['run.py', *sys.argv[1:]]\ncode = 0\n"
         "try:\n    runpy.run_path('run.py', run_name='__main__')\n"
         "except SystemExit as exit:\n    code = exit.code\n"
         "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'TORCH_NOT_IMPORTED')\nsys.exit(code)\n")


def cli(*args: str, probe: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", PROBE, *args] if probe else [sys.executable, "run.py", *args]
    return subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True)


def test_mission_command_writes_a_complete_result(tmp_path):
    proc = cli("task=glue/cola", "peft=capaboost_lora", "d=2", "density=0.5", "model=tiny", "data=fixture",
               f"runs_root={tmp_path}", "data.train_limit=24", "trainer.epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = tmp_path.rglob("result.json")
    result = json.loads(path.read_text())
    assert [k for k in CONTRACT_KEYS if k not in result] == []
    assert (result["task"], result["model"], result["peft"], result["method"]) == \
        ("glue/cola", "tiny", "capaboost_lora", "lora")
    assert (result["capaboost"], result["d"], result["density"], result["mask"], result["status"]) == \
        (True, 2, 0.5, "random", "completed")
    assert set(result["metrics"]) == set(result["best"]) == {"mcc"} and result["main_metric"] == "mcc"
    assert result["config"]["data"]["source"] == "fixture" and result["epochs_evaluated"] == 2
    assert Path(result["run_dir"]) == path.parent and path.parent.is_relative_to(tmp_path / "glue/cola/tiny")
    p = result["params"]
    assert 0 < p["effective"] < p["trainable"] < p["total"]
    # the summary line, and W&B offline files inside the run directory (logger=wandb is the default)
    assert proc.stdout.strip().splitlines()[-1].startswith("done glue/cola tiny capaboost_lora")
    assert list((path.parent / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("args, key", [
    (["d=0"], "d"), (["density=1.5"], "density"), (["density=0"], "density"), (["mask=zigzag"], "mask"),
    (["task=glue/colaa"], "task"), (["peft=capaboost_lorra"], "peft"),
    (["peft=prefix", "model=deberta-v3-base"], "prefix"),
    (["peft=capaboost_prefix", "task=vtab/cifar"], "prefix"),
    (["model=vit-b16"], "model"), (["trainer.lrr=0.1"], "trainer.lrr"), (["seed=abc"], "seed"),
    (["task=vtab/cifar", "data=hub"], "data.path"),
])
def test_bad_input_exits_nonzero_with_one_line_before_any_model(args, key, tmp_path):
    proc = cli("task=glue/cola", "peft=capaboost_lora", "model=tiny", "data=fixture", f"runs_root={tmp_path}",
               *args, probe=True)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("config error:") and key in errors[0], proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "TORCH_NOT_IMPORTED"
    assert not any(tmp_path.iterdir()) and not list(ROOT.glob("outputs"))


def metric_names(task: str) -> set[str]:
    return {"glue/cola": {"mcc"}, "glue/stsb": {"pearson", "spearman"},
            "glue/mnli": {"accuracy", "accuracy_mismatched"}, "squad/v1": {"exact_match", "f1"},
            "squad/v2": {"exact_match", "f1"}, "vtab/cifar": {"accuracy"}}[task]


def selection_rule(task: str, metrics: dict) -> float:
    """The paper's rule, written out here: CoLA MCC, STS-B mean(P, S), SQuAD F1, else accuracy."""
    if task == "glue/cola":
        return metrics["mcc"]
    if task == "glue/stsb":
        return (metrics["pearson"] + metrics["spearman"]) / 2
    return metrics["f1"] if task.startswith("squad") else metrics["accuracy"]


PEFTS = ("lora", "padapter", "prefix", "capaboost_lora", "capaboost_padapter", "capaboost_prefix")
GRID = ([("glue/cola", p) for p in PEFTS] + [("squad/v1", p) for p in PEFTS]
        + [("vtab/cifar", p) for p in PEFTS if "prefix" not in p]
        + [(t, "capaboost_lora") for t in ("glue/stsb", "glue/mnli", "squad/v2")])


@pytest.mark.parametrize("task, peft", GRID)
def test_every_task_family_and_peft_runs(task, peft, tmp_path):
    # 8 training rows in batches of 8: one step per epoch (SQuAD: a few, its contexts span windows)
    # VTAB evaluates only after the last epoch by default (tests/tasks/suites/test_vtab.py):
    # ask for every epoch
    every = ["task.eval_every=1", "task.report=best_test_epoch"] if task.startswith("vtab/") else []
    result = run([f"task={task}", f"peft={peft}", "trainer.epochs=2", "data.train_limit=8", *every], tmp_path)
    names = metric_names(task)
    assert set(result["metrics"]) >= names and set(result["best"]) >= names
    for name in names:
        low = -1.0 if name in ("mcc", "pearson", "spearman") else 0.0
        assert low <= result["metrics"][name] <= 1.0, (name, result["metrics"])
    vanilla = not peft.startswith("capaboost")
    assert (result["capaboost"], result["d"], result["density"]) == \
        ((False, 1, 1.0) if vanilla else (True, 2, 0.5))
    p = result["params"]
    assert (p["effective"] == p["trainable"]) if vanilla else (p["effective"] < p["trainable"])
    # one evaluation round per epoch; best = the report metrics of the round the select split prefers
    history = result["history"]
    steps = [row["step"] for row in history]
    assert len(history) == result["epochs_evaluated"] == 2 and steps == sorted(set(steps))
    assert steps[-1] == result["global_step"]
    scores = [selection_rule(task, row["select"]) for row in history]
    best = scores.index(max(scores))
    assert result["best_epoch"] == best + 1 and result["selection"]["value"] == pytest.approx(scores[best])
    chosen = history[best]
    for name in names:
        expected = (chosen["report_mismatched"]["accuracy"] if name == "accuracy_mismatched"
                    else chosen["report"][name])
        assert result["best"][name] == expected, name
    assert (Path(result["run_dir"]) / "result.json").is_file()


def test_tiny_lora_parameter_counts_match_hand_count(tmp_path):
    """Tiny RoBERTa (hidden 32, 2 layers), LoRA r=4 on query+value, classification head 32->32->2."""
    lora = 2 * 2 * (4 * 32 + 32 * 4)
    head = (32 * 32 + 32) + (32 * 2 + 2)
    for peft in ("lora", "capaboost_lora"):
        result = run(["task=glue/cola", f"peft={peft}", "trainer.max_steps=1"], tmp_path)
        assert result["params"]["trainable"] == lora + head, peft
    assert head < result["params"]["effective"] < lora + head


def test_report_metric_matches_sklearn_on_the_saved_weights(tmp_path):
    """Rebuild the tiny model from scratch, load peft.safetensors, predict the report split, and score
    it with sklearn and torch: the result's final MCC and report loss must be those numbers."""
    import torch
    from sklearn.metrics import matthews_corrcoef
    from transformers import set_seed

    import capaboost
    from tasks.data.load import load_glue
    from tasks.training import models

    over = ["task=glue/cola", "peft=capaboost_lora", "trainer.epochs=1", "trainer.lr=0.05"]
    result = run(over, tmp_path)
    spec = spec_for(over, tmp_path)
    set_seed(spec.seed)
    raw = load_glue("cola", "fixture", "split", seed=42, train_limit=16)
    model, tok = models.load_text(spec.config["model"], "seq_cls", 2, list(raw["train"]["sentence"]), 48)
    model = capaboost.load(model, Path(result["run_dir"]) / "peft.safetensors")
    report = raw["report"].select(range(8))
    enc = tok(list(report["sentence"]), truncation=True, max_length=48, padding=True, return_tensors="pt")
    labels = torch.tensor(list(report["label"]))
    with torch.no_grad():
        logits = model.eval()(**enc).logits
    assert result["metrics"]["mcc"] == pytest.approx(matthews_corrcoef(labels, logits.argmax(-1)), abs=1e-9)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert result["history"][-1]["report"]["loss"] == pytest.approx(loss, rel=1e-5)


def test_minilm_runs_offline(tmp_path):
    result = run(["model=minilm", "task=glue/stsb", "peft=capaboost_lora", "trainer.max_steps=1",
                  "trainer.max_seq_length=32", "data.eval_limit=4"], tmp_path)
    assert result["model"] == "minilm" and set(result["metrics"]) == {"pearson", "spearman"}
    # all-MiniLM-L6-v2: 6 layers, hidden 384, query+value LoRA r=8 (the fallback recipe), regression head
    assert result["params"]["trainable"] == 6 * 2 * (8 * 384 + 384 * 8) + 384 + 1
    assert 22_000_000 < result["params"]["total"] < 23_000_000


def test_local_data_path_is_used_and_recorded(tmp_path):
    """data.path takes a save_to_disk copy of the hub dataset (here: the RTE fixture written to disk)."""
    from tasks.data import fixtures

    fixtures.glue_raw("rte").save_to_disk(str(tmp_path / "rte"))
    result = run(["task=glue/rte", "peft=capaboost_lora", "trainer.max_steps=1", "data=hub",
                  f"data.path={tmp_path / 'rte'}"], tmp_path / "runs")
    assert result["config"]["data"]["source"] == "path"
    assert result["config"]["data"]["path"] == str(tmp_path / "rte")
    assert set(result["metrics"]) == {"accuracy"}


def test_masks_follow_the_mask_seed_not_the_training_seed(tmp_path):
    digests = {(seed, mask_seed): run(["task=glue/cola", "peft=capaboost_lora", "trainer.max_steps=1",
                                       f"seed={seed}", f"mask_seed={mask_seed}"], tmp_path)["mask_digest"]
               for seed, mask_seed in [(1, 0), (2, 0), (1, 5)]}
    assert digests[(1, 0)] == digests[(2, 0)] != digests[(1, 5)]
