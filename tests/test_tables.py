"""make_tables on a hand-made tree of result.json files: cells checked against means/stds worked out here."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from reporting import make_tables
from reporting.collect import load_runs

ROOT = Path(__file__).resolve().parents[1]
GLUE_METRICS = {"glue/cola": {"mcc"}, "glue/sst2": {"accuracy"}, "glue/mrpc": {"accuracy", "f1"},
                "glue/qqp": {"accuracy", "f1"}, "glue/stsb": {"pearson", "spearman"},
                "glue/mnli": {"accuracy"}, "glue/qnli": {"accuracy"}, "glue/rte": {"accuracy"}}


def result(task: str, peft: str, seed: int, metrics: dict, source: str = "hub", r: int | None = None,
           d: int = 2, density: float = 0.5, params: dict | None = None, status: str = "completed",
           train_limit: int | None = None, mask: str = "random", model: str = "roberta-base") -> dict:
    capa = peft.startswith("capaboost")
    return {"task": task, "model": model, "peft": peft, "method": peft.removeprefix("capaboost_"),
            "capaboost": capa, "d": d if capa else 1, "density": density if capa else 1.0, "mask": mask,
            "seed": seed, "mask_seed": 0, "metrics": {k: v - 0.01 for k, v in metrics.items()},
            "best": metrics, "main_metric": next(iter(metrics)),
            "params": params or {"trainable": 100, "effective": 75, "total": 1100}, "status": status,
            "runtime_s": 1.0, "git_sha": "x", "versions": {}, "hparams": {"r": 8},
            "config": {"data": {"source": source, "train_limit": train_limit},
                       "peft": {"name": peft, "r": r, "dropout": 0.0},
                       "trainer": {"max_steps": None, "progress": False}}}


def put(root: Path, name: str, data: dict | str) -> Path:
    path = root / name / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def sample_std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def md_row(md: str, label: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"row {label!r} not in\n{md}")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    cola = {"lora": [0.60, 0.62, 0.64], "capaboost_lora": [0.63, 0.70]}  # capaboost: seed 44 missing
    for peft, xs in cola.items():
        for seed, x in zip([42, 43, 44], xs, strict=False):
            put(runs, f"cola-{peft}-{seed}", result("glue/cola", peft, seed, {"mcc": x}))
    # a complete GLUE row for vanilla padapter (one seed), so the 11-number average is defined
    for i, (task, names) in enumerate(sorted(GLUE_METRICS.items())):
        put(runs, f"pa-{task.replace('/', '-')}", result(task, "padapter", 42,
                                                         {m: 0.80 + 0.01 * i + 0.001 * j
                                                          for j, m in enumerate(sorted(names))}))
    put(runs, "broken", "{not json")
    put(runs, "partial", {"task": "glue/cola", "model": "roberta-base"})
    put(runs, "running", result("glue/cola", "lora", 45, {"mcc": 0.99}, status="running"))
    put(runs, "fixture-run", result("glue/rte", "lora", 42, {"accuracy": 0.5}, source="fixture"))
    # Fig. 4 material: CapaBoost-LoRA at two ranks and two d, density 0.5
    for r_, d_, acc in [(4, 2, 0.70), (8, 2, 0.72), (4, 4, 0.71), (8, 4, 0.74)]:
        for seed in (42, 43):
            put(runs, f"f4-{r_}-{d_}-{seed}", result("glue/rte", "capaboost_lora", seed, {"accuracy": acc},
                                                     r=r_, d=d_))
    return runs


def test_tables_cells_and_problems(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = make_tables([tree], out)
    text = "\n".join(report.lines())
    assert f"SKIPPED {tree.resolve() / 'broken' / 'result.json'}" in text
    assert f"SKIPPED {tree.resolve() / 'partial' / 'result.json'}" in text
    assert "excluded 1 run(s) whose status is not 'completed' (1 running)" in text
    md = (out / "tables" / "glue_roberta_base.md").read_text()

    lora = md_row(md, "LoRA (r=8)")
    assert lora[1] == f"{100 * 0.62:.2f} ± {100 * sample_std([0.60, 0.62, 0.64]):.2f}" == "62.00 ± 2.00"
    xs = [63.0, 70.0]
    capa = md_row(md, "CapaBoost-LoRA (d=2, density=0.5, r=8)")
    assert capa[1] == f"{sum(xs) / 2:.2f} ± {sample_std(xs):.2f} (n=2)" == "66.50 ± 4.95 (n=2)"
    assert lora[2] == "—" and capa[2] == "—"  # no SST-2 runs
    assert lora[-2] == "—"  # average needs all 11 numbers
    # params %: effective / (total - trainable) = 75 / 1000
    assert lora[-1] == "7.5"

    pa = md_row(md, "PAdapter")
    cols = [m for t in ["glue/cola", "glue/sst2", "glue/mrpc", "glue/qqp", "glue/stsb", "glue/mnli",
                        "glue/qnli", "glue/rte"] for m in sorted(GLUE_METRICS[t]) if True]
    assert len(cols) == 11
    # one seed: value only, and the seed count
    assert pa[1].endswith("(n=1)") and "±" not in pa[1]
    values = []
    for i, (_task, names) in enumerate(sorted(GLUE_METRICS.items())):
        values += [100 * (0.80 + 0.01 * i + 0.001 * j) for j in range(len(names))]
    assert pa[-2] == f"{sum(values) / 11:.2f}"
    # published baselines sit in the hub table only, from results/paper/
    assert md_row(md, "ProPETL-LoRA (paper)")[1] == "61.81"
    fixture_md = (out / "tables" / "glue_roberta_base-fixture.md").read_text()
    assert "paper" not in fixture_md.split("- ")[0] and "NOT comparable" in fixture_md
    assert md_row(fixture_md, "LoRA")[11] == "50.00 (n=1)"

    rows = list(csv.DictReader((out / "tables" / "glue_roberta_base.csv").open()))
    lora_csv = next(r for r in rows if r["label"] == "LoRA (r=8)")
    assert float(lora_csv["glue/cola:mcc:mean"]) == pytest.approx(62.0)
    assert float(lora_csv["glue/cola:mcc:std"]) == pytest.approx(2.0)
    tex = (out / "tables" / "glue_roberta_base.tex").read_text()
    assert r"62.00 $\pm$ 2.00" in tex and r"\begin{tabular}" in tex

    # Fig. 4: one line per d, the plotted points as CSV next to the PNG
    png = out / "figures" / "fig4_r_by_d_roberta_base.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pts = list(csv.DictReader((out / "figures" / "fig4_r_by_d_roberta_base.csv").open()))
    got = {(p["series"], float(p["x"])): float(p["y"]) for p in pts if p["panel"] == "glue/rte"}
    assert got[("d=4", 8.0)] == pytest.approx(74.0) and got[("d=2", 4.0)] == pytest.approx(70.0)


def test_duplicate_seed_counted_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    put(runs, "a", result("glue/cola", "lora", 42, {"mcc": 0.5}))
    put(runs, "b", result("glue/cola", "lora", 42, {"mcc": 0.7}))
    make_tables([runs], tmp_path / "out", figures=False)
    md = (tmp_path / "out" / "tables" / "glue_roberta_base.md").read_text()
    assert md_row(md, "LoRA")[1] == "50.00 (n=1)" and "duplicate" in md


def test_x100_metrics_are_rejected(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    put(runs, "a", result("glue/cola", "lora", 42, {"mcc": 62.0}))
    c = load_runs([runs])
    assert not c.runs and "not a fraction" in c.problems[0].reason


def test_cli_missing_dir_and_partial_sweep(tree: Path, tmp_path: Path) -> None:
    script = ROOT / "scripts" / "make_tables.py"
    bad = subprocess.run([sys.executable, str(script), "--runs", str(tmp_path / "nope"), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr
    ok = subprocess.run([sys.executable, str(script), "--runs", str(tree), "--runs", str(tree),
                         "--out", str(tmp_path / "o2"), "--no-figures"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "broken" in ok.stdout and (tmp_path / "o2" / "tables" / "glue_roberta_base.md").is_file()


def test_outputs_of_an_earlier_call_are_removed(tmp_path: Path) -> None:
    first, second, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    put(first, "a", result("glue/cola", "lora", 42, {"mcc": 0.5}))
    put(second, "b", result("glue/cola", "lora", 42, {"mcc": 0.5}, source="fixture"))
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "notes.md").write_text("mine")
    make_tables([first], out, figures=False)
    assert (out / "tables" / "glue_roberta_base.md").is_file()
    report = make_tables([second], out, figures=False)
    assert not (out / "tables" / "glue_roberta_base.md").exists()
    assert (out / "tables" / "glue_roberta_base-fixture.md").is_file()
    assert (out / "tables" / "notes.md").read_text() == "mine"  # not one of ours: kept
    assert any("removed stale" in line for line in report.lines())


def test_paper_value_beside_ours_only_on_hub_data(tmp_path: Path) -> None:
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "glue_roberta_base.csv").write_text(
        "method,model,peft,d,density,reference,glue/cola:mcc,avg,params_pct\n"
        "LoRA,roberta-base,lora,1,1.0,test,61.5,,0.24\n"
        "CapaBoost-LoRA,roberta-base,capaboost_lora,4,0.5,test,70.0,,\n")
    runs = tmp_path / "runs"
    put(runs, "hub", result("glue/cola", "lora", 42, {"mcc": 0.6}))
    put(runs, "capa", result("glue/cola", "capaboost_lora", 42, {"mcc": 0.6}))  # d=2: no paper row
    put(runs, "fix", result("glue/cola", "lora", 42, {"mcc": 0.6}, source="fixture"))
    make_tables([runs], tmp_path / "out", paper_dir=paper, figures=False)
    md = (tmp_path / "out" / "tables" / "glue_roberta_base.md").read_text()
    row = md_row(md, "LoRA")
    assert row[1] == "60.00 (n=1) (paper 61.50)" and row[-1] == "7.5 (paper 0.24)"
    assert "paper" not in md_row(md, "CapaBoost-LoRA (d=2, density=0.5)")[1]
    assert md_row(md, "CapaBoost-LoRA (paper)")[1] == "70.00"  # unmatched paper rows stand alone
    fixture = (tmp_path / "out" / "tables" / "glue_roberta_base-fixture.md").read_text()
    assert "61.50" not in fixture and "70.00" not in fixture


def test_vtab_group_means_and_fig3(tmp_path: Path) -> None:
    import yaml

    runs = tmp_path / "runs"
    cols = yaml.safe_load((ROOT / "reporting" / "layouts.yaml").read_text())["vtab"]["columns"]
    for i, c in enumerate(cols):
        put(runs, f"v{i}", result(c["task"], "lora", 42, {"accuracy": 0.5 + 0.01 * i}, model="vit-b16"))
    for mask, density, acc in [("random", 0.3, 0.70), ("random", 0.5, 0.72), ("same", 0.3, 0.66),
                               ("same", 0.5, 0.69), ("none", 0.3, 0.65), ("none", 0.5, 0.65)]:
        for seed, delta in ((42, 0.0), (43, 0.02)):
            put(runs, f"f3-{mask}-{density}-{seed}", result("glue/cola", "capaboost_lora", seed,
                                                            {"mcc": acc + delta}, mask=mask, density=density,
                                                            train_limit=10000))
    make_tables([runs], tmp_path / "out")
    md = (tmp_path / "out" / "tables" / "vtab_vit_b16.md").read_text()
    row = md_row(md, "LoRA")
    groups = {}
    for i, c in enumerate(cols):
        groups.setdefault(c["group"], []).append(50 + i)
    n_cols = len(cols)
    assert row[1 + n_cols] == f"{sum(groups['natural']) / len(groups['natural']):.2f}"
    assert row[3 + n_cols] == f"{sum(groups['structured']) / len(groups['structured']):.2f}"
    assert row[4 + n_cols] == f"{sum(50 + i for i in range(n_cols)) / n_cols:.2f}"  # Avg over 19
    pts = list(csv.DictReader((tmp_path / "out" / "figures" / "fig3_masks_roberta_base.csv").open()))
    got = {(p["series"], float(p["x"])): (float(p["y"]), float(p["yerr"])) for p in pts}
    assert got[("mask=same d=2", 0.5)] == pytest.approx((70.0, sample_std([69.0, 71.0])), abs=1e-4)
    assert (tmp_path / "out" / "figures" / "fig3_masks_roberta_base.png").is_file()


def test_paper_value_not_beside_several_rows(tmp_path: Path) -> None:
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "glue_roberta_base.csv").write_text(
        "method,model,peft,d,density,reference,glue/cola:mcc\nLoRA,roberta-base,lora,1,1.0,test,61.5\n")
    runs = tmp_path / "runs"
    for r in (8, 16):
        put(runs, f"r{r}", result("glue/cola", "lora", 42, {"mcc": 0.6}, r=r))
    make_tables([runs], tmp_path / "out", paper_dir=paper, figures=False)
    md = (tmp_path / "out" / "tables" / "glue_roberta_base.md").read_text()
    assert "(paper 61.50)" not in md and md_row(md, "LoRA (paper)")[1] == "61.50"


def test_fig1_plots_the_measured_rank(tmp_path: Path) -> None:
    """result["rank"] (capaboost.analysis.rank_summary) wins over the d*r bound of Thm 3.1."""
    runs = tmp_path / "runs"
    for peft, d, measured in [("lora", 1, 7.5), ("capaboost_lora", 2, 15.0)]:
        for seed in (42, 43):
            r = result("glue/cola", peft, seed, {"mcc": 0.6}, r=8, d=d)
            r["rank"] = {"min": measured, "mean": measured, "max": measured, "bound": 8 * d}
            put(runs, f"{peft}-{seed}", r)
    make_tables([runs], tmp_path / "out")
    csvs = list((tmp_path / "out" / "figures").glob("fig1_rank_params*.csv"))
    assert len(csvs) == 1
    ranks = {p["series"].split(" density")[0]: float(p["y"]) for p in csv.DictReader(csvs[0].open())
             if p["panel"] == "rank"}
    assert ranks == {"LoRA": 7.5, "CapaBoost-LoRA d=2": 15.0}


def test_no_fig3_without_a_mask_or_density_contrast(tmp_path: Path) -> None:
    """Runs on a training subset that vary neither mask nor density (the demo) draw no Fig. 3."""
    runs = tmp_path / "runs"
    for seed in (42, 43):
        for d in (2, 4):  # the demo's arms differ in d only
            put(runs, f"one-{d}-{seed}", result("glue/sst2", "capaboost_lora", seed, {"accuracy": 0.9},
                                                train_limit=2000, d=d))
    make_tables([runs], tmp_path / "out")
    assert not list((tmp_path / "out" / "figures").glob("fig3_masks*"))
