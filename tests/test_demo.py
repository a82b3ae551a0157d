"""The offline demo: AFINN conversion on the real lexicon, the capacity check, the lr chooser, the paired
verdict, and a fast end-to-end run twice (same command, same numbers).

Oracles: the raw AFINN file parsed here (not by demo.afinn), the runner's own GLUE loader, numpy's
matrix rank of an explicitly summed masked product, the Eckart-Young bound from numpy's SVD, and
scipy's paired t-test (``ttest_rel(...).confidence_interval``) for the demo's intervals.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import capaboost
from capaboost.analysis import delta_rank
from demo import afinn, capacity, tune
from reporting.collect import load_runs

ROOT = Path(__file__).resolve().parents[1]


def _raw_lexicon() -> dict[str, int]:
    """The lexicon as the file says, parsed independently of demo.afinn."""
    out = {}
    for line in afinn.lexicon_path().read_text(encoding="utf-8").splitlines():
        if line.strip():
            word, value = line.rsplit("\t", 1)
            out[word] = int(value)
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return afinn.ensure(tmp_path_factory.mktemp("afinn"))


def _load(path: Path):
    from datasets import load_from_disk

    return load_from_disk(str(path))


# --- AFINN conversion -------------------------------------------------------------------------------

def test_real_lexicon_counts_and_splits(converted: Path) -> None:
    raw = _raw_lexicon()
    assert 3300 <= len(raw) <= 3500, len(raw)  # AFINN-165: ~3.4k entries
    data = _load(converted)
    assert set(data) == {"train", "validation"}
    words = {s: list(data[s]["sentence1"]) for s in data}
    assert sorted(words["train"] + words["validation"]) == sorted(raw)  # every entry exactly once
    assert not set(words["train"]) & set(words["validation"]), "a word is in two splits"
    assert 0.15 < len(words["validation"]) / len(raw) < 0.25
    assert all(set(data[s]["sentence2"]) == {""} for s in data)  # a single-sentence regression
    # stratified by valence: both splits see the same label distribution
    means = [np.mean(data[s]["label"]) for s in ("train", "validation")]
    assert abs(means[0] - means[1]) < 0.05
    info = afinn.load_info(converted.parent)["stats"]
    assert info["validation"]["words"] == len(words["validation"])
    assert info["train"]["label_std"] == pytest.approx(np.std(data["train"]["label"]), abs=1e-4)


@pytest.mark.parametrize("word,valence", [("abandon", -2), ("bastard", -5), ("good", 3),
                                          ("outstanding", 5), ("does not work", -3), ("naïve", -2)])
def test_valence_mapping_on_known_words(converted: Path, word: str, valence: int) -> None:
    assert _raw_lexicon()[word] == valence  # the raw file agrees with what we expect of it
    data = _load(converted)
    rows = [(s, i) for s in data for i, w in enumerate(data[s]["sentence1"]) if w == word]
    assert len(rows) == 1
    s, i = rows[0]
    assert data[s][i]["label"] == pytest.approx((valence + 5) / 2)
    assert 0.0 <= data[s][i]["label"] <= 5.0


def test_hub_schema_and_runner_loader(converted: Path) -> None:
    from tasks.data.load import load_glue

    data = _load(converted)
    assert list(data["train"].features) == ["sentence1", "sentence2", "label", "idx"]
    assert data["train"].features["label"].dtype == "float32"
    assert list(data["validation"]["idx"]) == list(range(len(data["validation"])))
    # the runner finds <data.path>/stsb by itself and applies its split protocol
    glue = load_glue("stsb", source=converted.parent, protocol="split")
    assert len(glue["select"]) + len(glue["report"]) == len(data["validation"])
    assert not set(glue["select"]["sentence1"]) & set(glue["report"]["sentence1"])


def test_regenerated_only_when_missing_or_stale(tmp_path: Path) -> None:
    target = afinn.ensure(tmp_path)
    stamp = (tmp_path / "afinn.json").stat().st_mtime_ns
    afinn.ensure(tmp_path)
    assert (tmp_path / "afinn.json").stat().st_mtime_ns == stamp  # fresh: nothing rewritten
    shutil.rmtree(target)
    afinn.ensure(tmp_path)
    assert (target / "dataset_dict.json").is_file()
    afinn.ensure(tmp_path, seed=1)  # another split seed rebuilds (stamp differs)
    assert afinn.load_info(tmp_path)["stamp"]["seed"] == 1


def test_malformed_lexicon_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "lex.txt"
    bad.write_text("good\t3\nbroken line without tab\n")
    with pytest.raises(ValueError, match="lex.txt:2"):
        afinn.read_lexicon(bad)
    bad.write_text("good\t9\n")
    with pytest.raises(ValueError, match="outside"):
        afinn.read_lexicon(bad)


# --- capacity check ---------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 2, 4, 8])
def test_rank_of_masked_sum_is_min_dr_dims(d: int) -> None:
    out_f, in_f, r = 16, 12, 2
    base = torch.nn.Linear(in_f, out_f, bias=False)
    masks_a = capaboost.masks.make_masks((r, in_f), d, 0.5, "random", seed=d)
    masks_b = capaboost.masks.make_masks((out_f, r), d, 0.5, "random", seed=100 + d)
    layer = capaboost.LoRALinear(base, r, 2 * r, masks_a, masks_b)
    with torch.no_grad():
        layer.lora_B.normal_()  # B starts at zero: give it values so the rank is the generic one
    a, b = layer.lora_A.detach().double().numpy(), layer.lora_B.detach().double().numpy()
    ma, mb = masks_a.numpy(), masks_b.numpy()
    explicit = layer.scaling * sum((b * mb[i]) @ (a * ma[i]) for i in range(d))
    np.testing.assert_allclose(layer.delta_weight().detach().numpy(), explicit, rtol=1e-5, atol=1e-6)
    expected = min(d * r, out_f, in_f)  # d=8: 16 > 12, capped by the smaller dimension
    assert np.linalg.matrix_rank(explicit) == expected
    assert delta_rank(layer) == expected


def test_same_mask_stays_at_rank_r() -> None:
    base = torch.nn.Linear(12, 16, bias=False)
    layer = capaboost.LoRALinear(base, 2, 4, capaboost.masks.make_masks((2, 12), 4, 0.5, "same", 0),
                                 capaboost.masks.make_masks((16, 2), 4, 0.5, "same", 1))
    with torch.no_grad():
        layer.lora_B.normal_()
    assert delta_rank(layer) == 2


def test_capaboost_vs_lora_at_equal_parameters() -> None:
    setup = capacity.Setup.tiny()
    problem = capacity.make_problem(setup.dim, setup.samples, seed=7)
    target = problem["target"].double().numpy()
    s2 = np.linalg.svd(target, compute_uv=False) ** 2
    oracle = s2[3:].sum() / s2.sum()  # Eckart-Young: best any rank-3 matrix can do
    lora = capacity.fit(problem, r=3, d=1, density=1.0, setup=setup, seed=0)
    capa = capacity.fit(problem, r=4, d=2, density=0.5, setup=setup, seed=0)
    # matched size: LoRA r=3 has 2*3*16 = 96; CapaBoost keeps ~3/4 of 2*4*16 = 128
    assert lora["effective"] == 96
    assert abs(capa["effective"] - 96) <= 12
    assert lora["residual"] == pytest.approx(oracle, abs=5e-3)  # LoRA training reaches its optimum
    assert lora["rank"] == 3 and capa["rank"] == 8  # d*r = 8 > 3 at the same parameter count
    assert not torch.allclose(capa["delta"], lora["delta"], atol=1e-2)
    print(f"tiny capacity check: LoRA r=3 {lora['residual']:.4f} (bound {oracle:.4f}), "
          f"CapaBoost r=4 d=2 {capa['residual']:.4f}")


def test_capacity_run_writes_outputs(tmp_path: Path) -> None:
    setup = capacity.Setup(dim=8, samples=16, steps=50, lr=2e-2, trials=1, lora_ranks=(1, 3),
                           capa_points=((4, 2),), rank_r=2, rank_ds=(1, 2))
    result = capacity.run(setup, tmp_path, progress=False)
    assert (tmp_path / "figures" / "capacity.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "capacity.json").read_text())
    assert saved["equal_params"] == result["equal_params"]
    assert saved["equal_params"][0]["lora"] == "r=3"  # design size 0.75*2*4*8 = 48 = LoRA r=3
    assert "Equal effective parameters" in (tmp_path / "capacity.md").read_text()


# --- lr choice and paired verdict (synthetic result.json files) ------------------------------------

def _result(root: Path, peft: str, r: int, d: int, seed: int, lr: float, report: float, select: float,
            effective: int) -> None:
    run = root / f"{peft}-r{r}-d{d}-lr{lr}-s{seed}"
    run.mkdir(parents=True)
    best = {"pearson": report, "spearman": report - 0.01}
    capa = peft.startswith("capaboost")  # a result.json with every required key (tasks.result.REQUIRED)
    (run / "result.json").write_text(json.dumps({
        "task": "glue/stsb", "model": "minilm", "peft": peft, "method": "lora", "capaboost": capa, "d": d,
        "density": 0.5 if capa else 1.0, "mask": "random", "seed": seed, "status": "completed",
        "metrics": best, "main_metric": "pearson", "best": best,
        "selection": {"metric": "mean(pearson,spearman)", "value": select, "split": "select"},
        "hparams": {"r": r, "lr": lr},
        "params": {"trainable": effective, "effective": effective, "total": 10**6},
        "runtime_s": 1.0, "git_sha": "x", "versions": {}, "config": {"peft": {"r": r}}}))


def test_tune_chooses_on_the_select_split_and_writes_the_arm_file(tmp_path: Path) -> None:
    # lr 2e-3 is best on the select split, 1e-3 on the report split: the choice must ignore the report
    for seed in (42, 43):
        _result(tmp_path / "runs", "lora", 3, 1, seed, 1e-3, report=0.90, select=0.70, effective=100)
        _result(tmp_path / "runs", "lora", 3, 1, seed, 2e-3, report=0.80, select=0.75 + seed / 1000,
                effective=100)
    cells = tune.grid(load_runs([tmp_path / "runs"]).runs, sweep=None)
    assert tune.choose(cells) == {"lora_r3": 2e-3}
    assert "edge of the grid" in tune.report(cells, {"lora_r3": 2e-3})  # the best of two is always at an edge
    inside = {"lora_r3": {1e-3: {42: 0.7}, 2e-3: {42: 0.8}, 4e-3: {42: 0.6}}}
    assert tune.choose(inside) == {"lora_r3": 2e-3} and "edge" not in tune.report(inside, {"lora_r3": 2e-3})
    shutil.copy(ROOT / "sweeps" / "demo_arm" / "lora_r3.yaml", tmp_path / "lora_r3.yaml")
    tune.write({"lora_r3": 2e-3}, tmp_path)
    written = yaml.safe_load((tmp_path / "lora_r3.yaml").read_text())
    assert written["trainer"]["lr"] == pytest.approx(2e-3) and written["peft"] == {"r": 3, "alpha": 6}
    # a run of an earlier grid (lr 3e-3 is not in sweeps/demo_tune.yaml) is left out of the choice
    _result(tmp_path / "runs", "lora", 3, 1, 42, 3e-3, report=0.99, select=0.99, effective=100)
    assert 3e-3 in tune.grid(load_runs([tmp_path / "runs"]).runs, sweep=None)["lora_r3"]
    assert 3e-3 not in tune.grid(load_runs([tmp_path / "runs"]).runs)["lora_r3"]
    _result(tmp_path / "runs", "lora", 3, 1, 44, 1e-3, report=0.9, select=0.9, effective=100)
    with pytest.raises(ValueError, match="different seeds"):  # an unfinished grid is not compared
        tune.choose(tune.grid(load_runs([tmp_path / "runs"]).runs, sweep=None))


def test_demo_sweeps_are_consistent() -> None:
    """Arms tuned = arms run; >= 5 seeds; each arm's lr is data in its file and lies on the tuning grid."""
    from tasks.config.sweeps import params_of

    demo, grid = params_of("demo"), params_of("demo_tune")
    assert demo["+sweep/demo_arm"] == grid["+sweep/demo_arm"]
    assert len(demo["seed"].split(",")) >= 5
    lrs = [float(x) for x in grid["trainer.lr"].split(",")]
    for arm in demo["+sweep/demo_arm"].split(","):
        conf = yaml.safe_load((ROOT / "sweeps" / "demo_arm" / f"{arm}.yaml").read_text())
        assert any(conf["trainer"]["lr"] == pytest.approx(x) for x in lrs), arm
    assert "trainer.lr" not in demo  # the demo runs the chosen values, not a grid


# --- fast end-to-end demo, twice --------------------------------------------------------------------

def _numbers(out: Path) -> dict[str, dict]:
    found = {}
    for path in sorted((out / "runs").rglob("result.json")):
        r = json.loads(path.read_text())
        found[tune.arm_of(r)] = {k: r[k] for k in ("best", "metrics", "selection", "history", "params")}
    return found


@pytest.mark.slow
def test_fast_demo_end_to_end_twice_gives_identical_numbers(tmp_path: Path) -> None:
    cmd = [sys.executable, "scripts/demo.py", "--fast"]
    first = subprocess.run([*cmd, "--out", str(tmp_path / "a")], cwd=ROOT, capture_output=True, text=True,
                           timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    numbers = _numbers(tmp_path / "a")
    assert set(numbers) == {"lora_r3", "capaboost_r4_d2"}  # the small-r pair, one seed
    assert list((tmp_path / "a" / "tables").glob("glue_minilm*.md"))  # the project's `make tables`
    (paired,) = (tmp_path / "a" / "tables").glob("glue_minilm*-paired.md")  # the verdicts, from make tables
    text = paired.read_text()
    assert "| CapaBoost-LoRA" in text and "fewer than 2 seeds: no interval" in text
    assert "--- " + str(paired) in first.stdout
    assert (tmp_path / "a" / "figures" / "capacity.png").is_file()
    second = subprocess.run([*cmd, "--skip-capacity", "--out", str(tmp_path / "b")], cwd=ROOT,
                            capture_output=True, text=True, timeout=1200)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert _numbers(tmp_path / "b") == numbers  # same command, same machine: every digit
    again = subprocess.run([*cmd, "--skip-capacity", "--out", str(tmp_path / "a")], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("already completed") == 2


@pytest.mark.slow
def test_official_vs_ours_ablation_short_version(tmp_path: Path) -> None:
    """sweeps/demo_official_vs_ours.yaml, fast: one seed, each switch's arm trains, is recorded with its
    switch, and `make tables` pairs it with the `ours` arm (one seed: no interval yet)."""
    cmd = [sys.executable, "scripts/demo.py", "--fast", "--sweep", "demo_official_vs_ours",
           "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "demo_official_vs_ours"
    runs = {}
    for path in (out / "runs").rglob("result.json"):
        r = json.loads(path.read_text())
        c = r["config"]
        runs[(c["peft"]["init"], c["trainer"]["clip"], c["task"]["report"])] = r
    best = "best_select_epoch"
    ours = runs.pop(("peft", "true_norm", best))
    assert set(runs) == {("official", "true_norm", best), ("peft", "official", best),
                         ("peft", "true_norm", "final_epoch")}
    assert runs[("official", "true_norm", best)]["history"] != ours["history"]  # another A
    assert runs[("peft", "true_norm", "final_epoch")]["selection"]["rule"] == "final_epoch"
    (paired,) = (out / "tables").glob("*-paired.md")
    text = paired.read_text()
    for label in ("init=official", "clip=official", "report=final_epoch"):
        assert f"CapaBoost-LoRA (d=2, density=0.5, {label})" in text, text
    assert text.count("fewer than 2 seeds: no interval") == 3 * 2  # 3 switches x Pearson, Spearman
