"""Every sweep composes for every run it lists, with the grid its paper table/figure needs (nothing runs)."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tasks import CONF
from tasks.config.runspec import register, resolve
from tasks.config.sweeps import available, compose_runs, distinct_runs, expand, params_of, sweep_names
from tasks.facts.glue import GLUE
from tasks.facts.vtab import VTAB

ROOT = Path(__file__).resolve().parents[1]
GLUE_TASKS = {f"glue/{t}" for t in GLUE}
SEEDS = {42, 43, 44}  # the paper's; the demo runs 5 seeds and tunes its learning rates on one
DEMO_SEEDS = {"demo": {42, 43, 44, 45, 46}, "demo_tune": {42, 43, 47, 48},
              "demo_official_vs_ours": {42, 43, 44, 45, 46},
              "peft_bench": {0}}  # PEFT's benchmark: its one published seed
ALL_PEFT = {"lora", "padapter", "prefix", "capaboost_lora", "capaboost_padapter", "capaboost_prefix"}
# Runs per sweep, multiplied out by hand from the paper's grids (tasks x methods x grid x seeds).
EXPECTED = {
    "glue_roberta_base": 8 * 6 * 3,
    "glue_deberta_v3": 8 * 4 * 3,
    "squad": 2 * 4 * 3,
    "vtab": 19 * 2 * 3,
    "fig1_rank_params": 8 * 3 * 4 * 3,   # tasks x (LoRA, d=2, d=4) x r in {4, 8, 16, 32} x seeds
    "fig3_masks": 2 * 3 * 5 * 3,         # CoLA/SST-2 x masks x densities x seeds
    "fig4_r_by_d": 4 * 4 * 4 * 3,        # small tasks x (LoRA, d=2, 3, 4) x r in {2, 4, 8, 16} x seeds
    "demo": 4 * 5,                       # arms x seeds (one task)
    "demo_tune": 4 * 5 * 4,              # arms x learning rates x seeds 42, 43, 47, 48
    "peft_bench": 3 + 5,                 # LoRA r32, CapaBoost r43/r32 d2 + DoRA, rsLoRA, VeRA, LoHa, AdaLoRA
}
OURS = sorted(k for k in EXPECTED if not k.startswith("demo"))


def test_every_paper_sweep_exists() -> None:
    assert set(OURS) <= set(available())


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict:
    # VTAB-1k has no hub dataset: the sweep needs data.path, a tree of pre-split list files
    root = tmp_path_factory.mktemp("vtab-1k")
    for name in VTAB:
        (root / name).mkdir()
        for split in ("train800val200", "test"):
            (root / name / f"{split}.txt").write_text("images/0.png 0\n")
    return {"extra": {"vtab": [f"data.path={root}"]}}


def _specs(name: str, cache: dict) -> list:
    if name not in cache:
        cache[name] = compose_runs(name, cache["extra"].get(name))
    return [spec for _, spec in cache[name]]


@pytest.mark.slow
@pytest.mark.parametrize("name", available())
def test_sweep_composes_every_run(name: str, specs: dict) -> None:
    if name.startswith("demo"):  # its data.path must exist: build the AFINN data where make demo keeps it
        from demo.afinn import ensure

        ensure(ROOT / "results" / "demo" / "data" / "afinn")
    runs = _specs(name, specs)
    if name in EXPECTED:
        assert len(runs) == EXPECTED[name]
    dirs = Counter(s.run_dir for s in runs)
    assert max(dirs.values()) == 1, f"two runs share a run dir: {dirs.most_common(1)}"
    assert {s.seed for s in runs} == DEMO_SEEDS.get(name, SEEDS)
    # Hydra itself reads the same grid from the composed sweep file, and the file runs as a multirun
    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"sweep={name}"], return_hydra_config=True)
        assert dict(cfg.hydra.sweeper.params) == params_of(name)
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
        # compose_runs composes once per set of group choices; a full compose per run agrees
        for overrides, spec in (specs[name][0], specs[name][-1]):
            assert resolve(compose("config", overrides=overrides)) == spec


@pytest.mark.slow
def test_table_grids(specs: dict) -> None:
    rb = _specs("glue_roberta_base", specs)
    assert {s.task for s in rb} == GLUE_TASKS and {s.peft for s in rb} == ALL_PEFT
    assert {s.model for s in rb} == {"roberta-base"} and {s.protocol for s in rb} == {"split"}
    assert {(s.d, s.density) for s in rb if s.capaboost} == {(2, 0.5)}
    assert {(s.d, s.density) for s in rb if not s.capaboost} == {(1, 1.0)}

    deb = _specs("glue_deberta_v3", specs)
    assert {s.task for s in deb} == GLUE_TASKS and {s.model for s in deb} == {"deberta-v3-base"}
    assert {s.method for s in deb} == {"lora", "padapter"}
    assert {(s.method, s.protocol) for s in deb} == {("lora", "dev"), ("padapter", "split")}  # by method

    sq = _specs("squad", specs)
    assert {s.task for s in sq} == {"squad/v1", "squad/v2"} and {s.model for s in sq} == {"deberta-v3-base"}
    assert {s.peft for s in sq} == {"lora", "capaboost_lora", "padapter", "capaboost_padapter"}

    vt = _specs("vtab", specs)
    assert {s.task for s in vt} == {f"vtab/{n}" for n in VTAB} and len(VTAB) == 19
    assert {s.peft for s in vt} == {"lora", "capaboost_lora"} and {s.protocol for s in vt} == {"final"}
    assert {s.model for s in vt} == {"vit-b16"}


@pytest.mark.slow
def test_figure_grids(specs: dict) -> None:
    f1 = _specs("fig1_rank_params", specs)
    assert {s.task for s in f1} == GLUE_TASKS
    assert {(s.peft, s.d, s.density, s.hparams["r"]) for s in f1} == (
        {("lora", 1, 1.0, r) for r in (4, 8, 16, 32)}
        | {("capaboost_lora", d, 0.5, r) for d in (2, 4) for r in (4, 8, 16, 32)})
    # rank is swept at the recipe's alpha/r = 16/8, not at a fixed alpha (which would change the scale too)
    assert {s.hparams["alpha"] / s.hparams["r"] for s in f1} == {2.0}

    f3 = _specs("fig3_masks", specs)
    assert {s.task for s in f3} == {"glue/cola", "glue/sst2"}
    assert {s.config["data"]["train_limit"] for s in f3} == {10000}
    assert {(s.mask, s.density) for s in f3} == {(m, p) for m in ("random", "same", "none")
                                                 for p in (0.1, 0.3, 0.5, 0.7, 0.9)}
    assert {(s.peft, s.d) for s in f3} == {("capaboost_lora", 2)}

    f4 = _specs("fig4_r_by_d", specs)
    assert {(s.d, s.density, s.hparams["r"]) for s in f4} == (
        {(1, 1.0, r) for r in (2, 4, 8, 16)} | {(d, 0.5, r) for d in (2, 3, 4) for r in (2, 4, 8, 16)})
    assert {s.hparams["alpha"] / s.hparams["r"] for s in f4} == {2.0}


def test_expand_command_line_replaces_a_swept_key() -> None:
    """As with `run.py -m sweep=squad seed=42`: the command line's value replaces the file's list."""
    runs = expand("squad", ["seed=42"])
    assert len(runs) == 2 * 4 and all("seed=42" in r for r in runs)
    assert all(f"sweep={'squad'}" in r for r in runs)


def test_sweep_list_cli() -> None:
    script = str(ROOT / "scripts" / "sweep_list.py")
    out = subprocess.run([sys.executable, script, "squad"], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "sweep squad: 24 run(s), 24 distinct" and len(lines) == 25
    assert "task=squad/v1" in lines[1] and "model=deberta-v3-base" in lines[1]
    bad = subprocess.run([sys.executable, script, "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no sweep 'nope'" in bad.stderr


# What the authors' code ran, read from LINs-lab/CapaBoost at a0d9963 (docs/paper.md, "Faithful by default"),
# written out here as the oracle: every run of every paper sweep must compose to it.
BEST = "best_select_epoch"  # load_best_model_at_end in every GLUE script
AUTHORS = {  # sweep: (precision, {method: protocol}, report)
    "glue_roberta_base": ("fp16", {"lora": "split", "padapter": "split", "prefix": "split"}, BEST),
    "glue_deberta_v3": ("fp16", {"lora": "dev", "padapter": "split"}, BEST),  # run_adapter.sh:198,202
    "squad": ("fp32", {"lora": "dev", "padapter": "dev"}, "final_epoch"),  # run_qa.py: no --fp16, no best
    "fig1_rank_params": ("fp16", {"lora": "split"}, BEST),
    "fig3_masks": ("fp16", {"lora": "split"}, BEST),
    "fig4_r_by_d": ("fp16", {"lora": "split"}, BEST),
    "vtab": ("auto", {"lora": "final"}, "final_epoch"),  # no VTAB code: precision and protocol are ours
}


@pytest.mark.slow
def test_paper_sweeps_run_the_authors_behaviour(specs: dict) -> None:
    # a new paper sweep (tasks.config.sweeps.SWEEP_SETS): add it
    assert set(AUTHORS) == set(sweep_names("paper"))
    for name, (precision, protocols, report) in AUTHORS.items():
        for spec in _specs(name, specs):
            where = f"{name}: {spec.task} {spec.peft} seed {spec.seed}"
            assert spec.config["trainer"]["clip"] == "official", where  # their norm over d copies
            if spec.method == "lora":
                assert spec.capaboost_config["init"] == "official", where  # their nn.Linear(r, in) A
            assert spec.hparams["precision"] == precision, where
            assert spec.protocol == protocols[spec.method], where
            assert spec.config["task"]["report"] == report, where
    main = [s for s in _specs("glue_roberta_base", specs) if s.method == "lora"]
    assert {(s.hparams["r"], s.hparams["alpha"]) for s in main} == {(32, 48)}  # compute_metrics.py:117
    deb = _specs("glue_deberta_v3", specs)
    assert {(s.task, s.hparams["lr"], s.hparams["epochs"]) for s in deb if s.method == "lora"
            and s.task in ("glue/rte", "glue/qnli")} == {("glue/rte", 1.5e-3, 60), ("glue/qnli", 8e-4, 30)}


def test_sweeps_that_list_the_same_run_count_it_once() -> None:
    """Fig. 1 (LoRA, d=2, d=4 x r 4, 8, 16, 32) and Fig. 4 (LoRA, d=2, 3, 4 x r 2, 4, 8, 16) on one task
    and seed: by hand, {LoRA, d=2, d=4} x {4, 8, 16} = 9 runs are in both, so 12 + 16 - 9 = 19 distinct."""
    found = distinct_runs(["fig1_rank_params", "fig4_r_by_d"], ["task=glue/cola", "seed=42"])
    assert found["listed"] == {"fig1_rank_params": 12, "fig4_r_by_d": 16}
    assert len(found["runs"]) == 19
    assert sum(len(sweeps) == 2 for sweeps, _, _ in found["runs"].values()) == 9
    # an override scoped to one sweep: Fig. 4 on another seed shares nothing
    apart = distinct_runs(["fig1_rank_params", "fig4_r_by_d"], ["task=glue/cola", "seed=42",
                                                               "fig4_r_by_d:seed=43"])
    assert len(apart["runs"]) == 28


def test_sweep_list_honours_args_and_names_runs_that_do_not_compose() -> None:
    make = subprocess.run(["make", "-n", "sweep-list", "NAME=squad", "ARGS=seed=42"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    assert "scripts/sweep_list.py squad seed=42" in make
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep_list.py"), "vtab", "--count",
                          "task=vtab/dtd", "seed=42"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("sweep vtab: 2 run(s), 2 distinct; 2 do not compose, e.g. ")
    assert "data.path is not set" in out
