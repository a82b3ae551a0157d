"""PEFT-library baselines (tasks/training/baselines.py): built by PEFT, counted by hand, trained through the
runner,
tabulated and paired against CapaBoost."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from tasks.config.runspec import ConfigError
from tasks.training import baselines
from tests.runs import run, spec_for

H, LAYERS, R = 32, 2, 4  # model=tiny: hidden 32, 2 layers; query and value adapted; the tiny recipe's r=4
N = 2 * LAYERS  # adapted matrices, each H x H
HEAD = (H * H + H) + (H * 2 + 2)  # RoBERTa's classifier: dense + out_proj (2 labels)
# PEFT params by hand, from each method's paper: trained entries per adapted H x H matrix
HAND = {"dora": N * (R * 2 * H + H),      # A, B, and the magnitude vector (one per output row)
        "rslora": N * R * 2 * H, "pissa": N * R * 2 * H,
        "vera": N * (R + H),                # lambda_d (r) and lambda_b (out); the shared A, B are frozen
        "loha": N * 2 * R * 2 * H,          # two rank-r pairs, Hadamard product
        "adalora": N * 12 * (2 * H + 1)}    # before pruning: init_r=12 rows of A, columns of B, entries of E
RANK_BOUND = {"dora": R, "rslora": R, "pissa": R, "vera": R, "loha": R * R, "adalora": 12}


def tiny_model(spec):
    from tasks.training.models import load_text

    torch.manual_seed(0)
    return load_text(spec.config["model"], "seq_cls", 2, corpus=["a b c"], max_length=64)[0]


def test_every_name_is_a_field_of_its_peft_config() -> None:
    """What we pass PEFT (fixed, r/alpha/dropout keys, options) is spelt as PEFT spells it."""
    import peft

    for name, b in baselines.BASELINES.items():
        fields = {f.name for f in dataclasses.fields(getattr(peft, b.config_class))}
        ours = {k for k, _ in b.fixed} | {b.r_key, b.alpha_key, b.dropout_key} - {None}
        ours |= set(b.options) - set(baselines.SCHEDULE_OPTIONS)
        assert ours <= fields, (name, ours - fields)


@pytest.mark.parametrize("method", sorted(HAND))
def test_counts_match_hand_counts(method: str, tmp_path: Path) -> None:
    spec = spec_for(["task=glue/rte", f"peft={method}"], tmp_path)
    from tasks.training.peft import attach_peft, count_parameters

    model, _ = attach_peft(tiny_model(spec), spec)
    counts = count_parameters(model, spec)
    assert counts["peft"] == HAND[method]
    assert counts["trainable"] - counts.get("peft_initial", counts["peft"]) == HEAD  # head: not PEFT
    plain = sum(p.numel() for p in tiny_model(spec).parameters())
    frozen_ranknum = N if method == "adalora" else 0  # AdaLoRA keeps a frozen rank counter per layer
    assert counts["total"] == plain + counts.get("peft_initial", counts["peft"]) + frozen_ranknum  # head once
    if method == "vera":  # the frozen projections exist and are left out
        frozen = {n: b for n, b in model.named_buffers() if "vera_A" in n or "vera_B" in n}
        assert frozen and not any(p.requires_grad for p in model.parameters() if p.numel() == R * H)


def test_adalora_counts_its_budget_after_pruning(tmp_path: Path) -> None:
    """Kept ranks x (in + out + 1) per layer, from a planted rank pattern (as PEFT's allocator writes it)."""
    spec = spec_for(["task=glue/rte", "peft=adalora"], tmp_path)
    from tasks.training.peft import attach_peft, count_parameters

    model, _ = attach_peft(tiny_model(spec), spec)
    tuner = model.base_model
    kept = [3, 5, 0, 12]
    names = [n for n, p in tuner.model.named_parameters() if "lora_E.default" in n]
    tuner.peft_config["default"].rank_pattern = {
        n: [i < k for i in range(12)] for n, k in zip(names, kept, strict=True)}
    counts = count_parameters(model, spec)
    assert counts["peft"] == sum(kept) * (2 * H + 1) and counts["peft_initial"] == HAND["adalora"]


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    cases = {("peft=dora", "peft.capaboost=true"): "peft.capaboost=true",
             ("peft=vera", "+peft.options.alpha=3"): "peft.options ['alpha'] not allowed for vera",
             ("peft=lora", "+peft.options.bias=all"): "applies to the PEFT-library baselines",
             ("peft=adalora", "peft.options.tfinal_ratio=0.95"): "tinit_ratio + tfinal_ratio",
             ("peft=adalora", "peft.options.init_r=2"): "init_r=2 must be an integer >= peft.r=4"}
    for overrides, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("+", r"\+")):
            spec_for(["task=glue/rte", *overrides], tmp_path)


def test_a_baseline_on_a_paper_recipe_keeps_peft_init(tmp_path: Path) -> None:
    """The paper recipes set CapaBoost-LoRA's A init to the authors' (peft.init=official); a baseline on
    the same model and task composes, inherits the LoRA recipe's r and lr, and carries no init of ours."""
    spec = spec_for(["task=glue/rte", "model=roberta-base", "peft=dora"], tmp_path)
    assert spec.config["peft"]["init"] == "official" and "init" not in spec.capaboost_config
    lora = spec_for(["task=glue/rte", "model=roberta-base", "peft=lora"], tmp_path)
    assert (spec.hparams["r"], spec.hparams["lr"]) == (lora.hparams["r"], lora.hparams["lr"])


def test_adalora_schedule_steps() -> None:
    assert baselines.schedule_steps({"tinit_ratio": 0.1, "tfinal_ratio": 0.2}, 340) == (34, 68)
    assert baselines.schedule_steps({"tinit_ratio": 0.5, "tfinal_ratio": 0.5}, 3) == (1, 1)  # one step left


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict], dict]:
    """Each baseline and CapaBoost-LoRA r=4 d=2, a few steps through the runner; rsLoRA at r=3 sits
    within the paired tolerance of CapaBoost's size. AdaLoRA's schedule is recorded by a callback."""
    from transformers import TrainerCallback

    root = tmp_path_factory.mktemp("runs")
    seen: dict = {}

    class Watch(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            config = model.model.base_model.peft_config["default"]
            seen.update(max_steps=state.max_steps, total_step=config.total_step, tinit=config.tinit,
                        tfinal=config.tfinal, pattern=dict(config.rank_pattern or {}))

    common = ["task=glue/rte", "trainer.max_steps=10", "data.train_limit=16", "trainer.batch_size=4"]
    results = {"capaboost_lora": run([*common, "peft=capaboost_lora", "d=2", "density=0.5"], root)}
    for method in sorted(HAND):
        extra = ["peft.r=3", "peft.alpha=6"] if method == "rslora" else []
        results[method] = run([*common, f"peft={method}", *extra], root,
                              callbacks=(Watch(),) if method == "adalora" else ())
    return root, results, seen


def test_each_baseline_trains_and_writes_its_result(trained) -> None:
    _, results, _ = trained
    for method in HAND:
        res = results[method]
        run_dir = Path(res["run_dir"])
        assert json.loads((run_dir / "result.json").read_text())["peft"] == method
        assert (run_dir / baselines.WEIGHTS_DIR / "adapter_config.json").is_file()
        if method != "adalora":
            r = 3 if method == "rslora" else R
            assert res["params"]["peft"] == HAND[method] * r // R
            assert res["rank"]["max"] <= res["rank"]["bound"] == RANK_BOUND[method] * r // R


def test_adalora_takes_its_schedule_from_the_trainer(trained) -> None:
    _, results, seen = trained
    steps = results["adalora"]["global_step"]
    assert seen["total_step"] == seen["max_steps"] == steps == 10
    assert (seen["tinit"], seen["tfinal"]) == (math.floor(0.1 * steps), math.floor(0.2 * steps))
    kept = sum(sum(mask) for mask in seen["pattern"].values())
    assert kept == 4 * N  # PEFT's final budget: target_r (the tiny recipe's r=4) x adapted matrices
    assert results["adalora"]["params"]["peft"] == kept * (2 * H + 1)
    assert results["adalora"]["params"]["peft_initial"] == HAND["adalora"]
    assert results["adalora"]["rank"]["mean"] == kept / N


def test_tables_list_the_baselines_and_pair_them_within_tolerance(trained, tmp_path: Path) -> None:
    from reporting import make_tables
    from reporting.paired import PARAM_TOLERANCE

    root, results, _ = trained
    make_tables([root], tmp_path, figures=False)
    md = (tmp_path / "tables" / "glue_tiny-fixture-single_runs.md").read_text()
    labels = {"dora": "DoRA", "rslora": "rsLoRA", "pissa": "PiSSA", "vera": "VeRA", "loha": "LoHa",
              "adalora": "AdaLoRA"}
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    for label in labels.values():
        row = next(v for k, v in rows.items() if k.startswith(label))
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        assert cells[-1] != "—" and cells[-2] != "—"  # Params % and rank
    paired = (tmp_path / "tables" / "glue_tiny-fixture-single_runs-paired.md").read_text()
    capa = results["capaboost_lora"]["params"]["peft"]
    within = {labels[m] for m in labels if abs(results[m]["params"]["peft"] - capa) <= PARAM_TOLERANCE * capa}
    partners = {line.split("|")[3].strip().split(" ")[0] for line in paired.splitlines()
                if line.startswith("| CapaBoost-LoRA")}
    assert within == partners == {"rsLoRA"}


@pytest.mark.parametrize("method", sorted(HAND))
def test_preflight_builds_counts_and_traces_each_baseline(method: str, tmp_path: Path) -> None:
    """On the meta device through the runner's attach_peft: the same hand counts, and a traced step (LoHa's
    random module-dropout decision included)."""
    from preflight.plan import Planner, Target

    spec = spec_for(["task=glue/rte", f"peft={method}"], tmp_path)
    row = Planner(Target("A100-80GB", 80)).check([method], spec)
    assert row.status == "ok" and row.counts["peft"] == HAND[method] and row.tflop_per_step > 0
