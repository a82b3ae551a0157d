"""make_tables on hand-made trees of result.json files: what the tables and figures say, checked
against means, stds and averages worked out here."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.fake_results import GLUE_METRICS, fake_result, put
from reporting import make_tables
from reporting.collect import load_runs

ROOT = Path(__file__).resolve().parents[1]
GLUE_ORDER = ["glue/cola", "glue/sst2", "glue/mrpc", "glue/qqp", "glue/stsb", "glue/mnli", "glue/qnli",
              "glue/rte"]
# the 11 numbers of the paper's GLUE average (MNLI: matched only)
ELEVEN = [(t, m) for t in GLUE_ORDER for m in GLUE_METRICS[t] if m != "accuracy_mismatched"]


def result(task: str, peft: str, seed: int, metrics: dict, **kw) -> dict:
    return fake_result(task, peft, seed, metrics, **kw)


def sample_std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def md_rows(md: str) -> dict[str, list[str]]:
    out = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| Method"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out[cells[0]] = cells
    return out


def md_row(md: str, label: str) -> list[str]:
    rows = md_rows(md)
    assert label in rows, f"row {label!r} not in\n{md}"
    return rows[label]


def read(out: Path, name: str) -> str:
    return (out / "tables" / name).read_text()


def csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Older result files (no identity, no sweep record): today's behaviour must hold."""
    runs = tmp_path / "runs"
    cola = {"lora": [0.60, 0.62, 0.64], "capaboost_lora": [0.63, 0.70]}  # capaboost: seed 44 missing
    for peft, xs in cola.items():
        for seed, x in zip([42, 43, 44], xs, strict=False):
            put(runs, f"cola-{peft}-{seed}", result("glue/cola", peft, seed, {"mcc": x}))
    # a complete GLUE row for vanilla padapter (one seed), so the 11-number average is defined
    for i, task in enumerate(GLUE_ORDER):
        put(runs, f"pa-{task.replace('/', '-')}", result(task, "padapter", 42,
                                                         {m: 0.80 + 0.01 * i + 0.001 * j
                                                          for j, m in enumerate(GLUE_METRICS[task])}))
    put(runs, "broken", "{not json")
    put(runs, "partial", {"task": "glue/cola", "model": "roberta-base"})
    put(runs, "diverged", result("glue/cola", "lora", 45, {"mcc": 0.99}, status="diverged"))
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
    assert "excluded 1 run(s) whose status is not 'completed' (1 diverged)" in text
    md = read(out, "glue_roberta_base.md")

    lora = md_row(md, "LoRA (r=8)")
    assert lora[1] == f"{100 * 0.62:.2f} ± {100 * sample_std([0.60, 0.62, 0.64]):.2f}" == "62.00 ± 2.00"
    xs = [63.0, 70.0]
    capa = md_row(md, "CapaBoost-LoRA (d=2, density=0.5, r=8)")
    assert capa[1] == f"{sum(xs) / 2:.2f} ± {sample_std(xs):.2f} (n=2)" == "66.50 ± 4.95 (n=2)"
    assert lora[2] == "—" and capa[2] == "—"  # no SST-2 runs
    assert lora[-3] == "—"  # average needs all 11 numbers
    # params %: older files have no PEFT-only count: effective / (total - trainable) = 75 / 1000, marked
    assert lora[-1] == "7.5*" and "*: older result files without a PEFT-only count" in md

    pa = md_row(md, "PAdapter")
    assert pa[1].endswith("(n=1)") and "±" not in pa[1]
    values = [100 * (0.80 + 0.01 * GLUE_ORDER.index(t) + 0.001 * GLUE_METRICS[t].index(m)) for t, m in ELEVEN]
    assert len(values) == 11
    assert pa[-3] == f"{sum(values) / 11:.2f} (min n=1)"
    # published baselines sit in the hub table only, from results/paper/
    assert md_row(md, "ProPETL-LoRA (paper)")[1] == "61.81"
    fixture_md = read(out, "glue_roberta_base-fixture.md")
    assert "(paper" not in fixture_md and "NOT comparable" in fixture_md
    assert md_row(fixture_md, "LoRA")[11] == "50.00 (n=1)"

    rows = csv_rows(out / "tables" / "glue_roberta_base.csv")
    lora_csv = next(r for r in rows if r["label"] == "LoRA (r=8)")
    assert float(lora_csv["glue/cola:mcc:mean"]) == pytest.approx(62.0)
    assert float(lora_csv["glue/cola:mcc:std"]) == pytest.approx(2.0)
    assert lora_csv["params_flags"] == "head_included"
    tex = read(out, "glue_roberta_base.tex")
    assert r"62.00 $\pm$ 2.00" in tex and r"\begin{tabular}" in tex

    # Fig. 4 from older files (no sweep record): one line per d, the plotted points as CSV next to the PNG
    png = out / "figures" / "fig4_r_by_d_roberta_base.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pts = csv_rows(out / "figures" / "fig4_r_by_d_roberta_base.csv")
    got = {(p["series"], float(p["x"])): float(p["y"]) for p in pts if p["panel"] == "RTE"}
    assert got[("CapaBoost-LoRA (d=4)", 8.0)] == pytest.approx(74.0)
    assert got[("CapaBoost-LoRA (d=2)", 4.0)] == pytest.approx(70.0)


def _dup_tree(runs: Path, order: tuple[str, str]) -> None:
    for seed, x in ((43, 0.60), (44, 0.64)):
        put(runs, f"s{seed}", result("glue/cola", "lora", seed, {"mcc": x}))
    put(runs, order[0], result("glue/cola", "lora", 42, {"mcc": 0.62}))
    put(runs, order[1], result("glue/cola", "lora", 42, {"mcc": 0.10}))  # a stray rerun


def test_conflicting_duplicates_are_reported_never_picked(tmp_path: Path) -> None:
    """The table never chooses between two different results for one seed, whatever the paths."""
    mds = []
    for i, order in enumerate((("a", "b"), ("b", "a"))):
        runs, out = tmp_path / f"runs{i}", tmp_path / f"out{i}"
        _dup_tree(runs, order)
        report = make_tables([runs], out, figures=False)
        md = read(out, "glue_roberta_base.md")
        xs = [60.0, 64.0]  # seed 42 left out
        cell = md_row(md, "LoRA")[1]
        assert cell == f"{sum(xs) / 2:.2f} ± {sample_std(xs):.2f} (n=2)§" == "62.00 ± 2.83 (n=2)§"
        note = next(x for x in md.splitlines() if "conflicting duplicates, LoRA glue/cola seed 42" in x)
        for name in ("a", "b"):
            assert f"{runs.resolve() / name / 'result.json'}: " in note
        assert "result.json: mcc=0.6200" in note and "result.json: mcc=0.1000" in note
        assert any(line.startswith("CONFLICT glue_roberta_base glue/cola seed 42") for line in report.lines())
        row = next(r for r in csv_rows(out / "tables" / "glue_roberta_base.csv") if r["label"] == "LoRA")
        assert row["glue/cola:mcc:flags"] == "conflict" and row["glue/cola:mcc:n"] == "2"
        assert r"\S{}" in read(out, "glue_roberta_base.tex")
        mds.append(md_row(md, "LoRA"))
    assert mds[0] == mds[1]


def test_identical_duplicates_are_merged(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for name in ("a", "b"):
        put(runs, name, result("glue/cola", "lora", 42, {"mcc": 0.5}))
    make_tables([runs], tmp_path / "out", figures=False)
    md = read(tmp_path / "out", "glue_roberta_base.md")
    assert md_row(md, "LoRA")[1] == "50.00 (n=1)"
    merged = runs.resolve() / "b" / "result.json"
    assert f"Merged 1 identical duplicate result(s) of a seed already counted: {merged}" in md


def test_missing_best_is_marked_in_md_csv_tex(tmp_path: Path) -> None:
    """A seed without `best` contributes its final epoch (0.01 lower here) and the cell says so."""
    runs = tmp_path / "runs"
    best = {42: 0.75, 43: 0.74, 44: 0.73}
    for seed, x in best.items():
        put(runs, f"rte{seed}", result("glue/rte", "lora", seed, {"accuracy": x}, best=seed != 44))
    make_tables([runs], tmp_path / "out", figures=False)
    md = read(tmp_path / "out", "glue_roberta_base.md")
    xs = [75.0, 74.0, 72.0]  # seed 44: final epoch 0.73 - 0.01
    assert md_row(md, "LoRA")[11] == f"{sum(xs) / 3:.2f} ± {sample_std(xs):.2f}†" == "73.67 ± 1.53†"
    assert "†: at least one seed has no best-epoch result: its final epoch is used" in md
    row = csv_rows(tmp_path / "out" / "tables" / "glue_roberta_base.csv")[-1]
    assert row["glue/rte:accuracy:flags"] == "final_epoch"
    tex = read(tmp_path / "out", "glue_roberta_base.tex")
    assert r"73.67 $\pm$ 1.53$^{\dagger}$" in tex and r"$^{\dagger}$: at least one seed" in tex


def test_test_set_selection_is_marked(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for seed in (42, 43, 44):
        put(runs, f"v{seed}", result("vtab/dtd", "lora", seed, {"accuracy": 0.6}, model="vit-b16",
                                     rule="best_test_epoch" if seed == 42 else "best_select_epoch"))
    make_tables([runs], tmp_path / "out", figures=False)
    md = read(tmp_path / "out", "vtab_vit_b16.md")
    assert md_row(md, "LoRA")[3] == "60.00 ± 0.00‡"
    assert "‡: at least one seed chose its epoch on the test set (selection rule best_test_epoch)" in md


def _identity_grid(runs: Path, peft: str, tasks: list[str], seeds=(42, 43, 44), **kw) -> dict:
    """Files with identity; metrics from a formula so the test knows every cell."""
    vals = {}
    for t_i, task in enumerate(tasks):
        for s_i, seed in enumerate(seeds):
            m = {name: 0.70 + 0.02 * t_i + 0.01 * s_i + 0.001 * j
                 for j, name in enumerate(GLUE_METRICS[task])}
            vals[(task, seed)] = m
            tag = "-".join(f"{k}{v}" for k, v in sorted(kw.items()) if k != "sweeps")
            put(runs, f"{peft}-{tag}-{task.replace('/', '_')}-{seed}",
                result(task, peft, seed, m, **{"sweeps": [], **kw}))
    return vals


def test_labels_identify_each_experiment(tmp_path: Path) -> None:
    """10k-subset and full-data CapaBoost-LoRA differ in one field: two rows, two labels; per-task
    recipe values (CoLA and SST-2 have different lr) do not split a row; dropout=0 is not named."""
    runs = tmp_path / "runs"
    full = _identity_grid(runs, "capaboost_lora", ["glue/cola", "glue/sst2"])
    sub = _identity_grid(runs, "capaboost_lora", ["glue/cola"], train_limit=10000)
    _identity_grid(runs, "lora", ["glue/cola"])
    make_tables([runs], tmp_path / "out", figures=False)
    md = read(tmp_path / "out", "glue_roberta_base-single_runs.md")
    rows = md_rows(md)
    assert set(rows) == {"LoRA", "CapaBoost-LoRA (d=2, density=0.5)",
                         "CapaBoost-LoRA (d=2, density=0.5, 10k-example training subset)"}
    cola_full = [100 * full[("glue/cola", s)]["mcc"] for s in (42, 43, 44)]
    cola_sub = [100 * sub[("glue/cola", s)]["mcc"] for s in (42, 43, 44)]
    assert rows["CapaBoost-LoRA (d=2, density=0.5)"][1] == \
        f"{sum(cola_full) / 3:.2f} ± {sample_std(cola_full):.2f}"
    assert rows["CapaBoost-LoRA (d=2, density=0.5)"][2] != "—"  # SST-2 in the same row despite its lr
    assert rows["CapaBoost-LoRA (d=2, density=0.5, 10k-example training subset)"][1] == \
        f"{sum(cola_sub) / 3:.2f} ± {sample_std(cola_sub):.2f}"
    assert "dropout" not in md.split("\n- ")[0]


def test_labels_never_collide(tmp_path: Path) -> None:
    """Two identities whose difference no label field shows still get two different labels."""
    runs = tmp_path / "runs"
    a = result("glue/cola", "lora", 42, {"mcc": 0.5}, sweeps=[])
    b = json.loads(json.dumps(a))
    del b["identity"]["capaboost"]["init"]  # same experiment for a reader, different identity
    b["identity_key"] = "other"
    b["best"] = {"mcc": 0.6}
    put(runs, "a", a)
    put(runs, "b", b)
    make_tables([runs], tmp_path / "out", figures=False)
    labels = list(md_rows(read(tmp_path / "out", "glue_roberta_base-single_runs.md")))
    assert len(labels) == 2 and len(set(labels)) == 2
    assert all(label.startswith("LoRA [id ") for label in labels)


def test_each_sweep_gets_its_own_outputs(tmp_path: Path) -> None:
    """Main table from the main sweep only; Fig. 4 runs make their own table; a run both sweeps
    requested is in both; Fig. 1 does not borrow the Fig. 4 runs."""
    runs = tmp_path / "runs"
    _identity_grid(runs, "lora", ["glue/cola", "glue/rte"], sweeps=["glue_roberta_base"])
    _identity_grid(runs, "capaboost_lora", ["glue/cola", "glue/rte"],
                   sweeps=["glue_roberta_base", "fig4_r_by_d"])
    for peft, d in (("lora", 1), ("capaboost_lora", 2), ("capaboost_lora", 3)):
        for r in (2, 4):
            _identity_grid(runs, peft, ["glue/cola", "glue/rte"], r=r, d=d, sweeps=["fig4_r_by_d"])
    report = make_tables([runs], tmp_path / "out")
    main = md_rows(read(tmp_path / "out", "glue_roberta_base.md"))
    assert {k for k in main if "(paper)" not in k} == {"LoRA", "CapaBoost-LoRA (d=2, density=0.5)"}
    fig4_table = md_rows(read(tmp_path / "out", "glue_roberta_base-fig4_r_by_d.md"))
    assert "GLUE on RoBERTa-base, runs of sweep fig4_r_by_d" in \
        read(tmp_path / "out", "glue_roberta_base-fig4_r_by_d.md")
    assert len(fig4_table) == 7  # 3 arms x 2 ranks + the shared d=2 r=8 run
    assert "CapaBoost-LoRA (d=3, density=0.5, r=4)" in fig4_table
    figs = {f.kind: f for f in report.figure_specs}
    assert figs["fig4_r_by_d"].panels == ["CoLA", "RTE"]
    assert figs["fig4_r_by_d"].title.endswith("alpha/r varies between runs: rank and scale confounded")
    series = figs["fig4_r_by_d"].series("CoLA")
    # legend (drawing) order: the baseline, then d ascending
    assert list(figs["fig4_r_by_d"].drawn["CoLA"]) == ["LoRA (d=1)", "CapaBoost-LoRA (d=2)",
                                                       "CapaBoost-LoRA (d=3)"]
    assert [x for x, _ in series["CapaBoost-LoRA (d=2)"]] == [2.0, 4.0, 8.0]
    assert [x for x, _ in series["LoRA (d=1)"]] == [2.0, 4.0]  # main-sweep LoRA r=8 is not a Fig. 4 run
    # Fig. 1 had no runs of its own: drawn from the main table, where only r=8 exists -> not drawn
    assert not figs["fig1_rank_params"].points
    assert any("fig1_rank_params_roberta_base: grid absent" in line for line in report.lines())
    assert not (tmp_path / "out" / "figures" / "fig1_rank_params_roberta_base.png").exists()


def test_rows_sorted_by_rank_numerically(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for r in (16, 4, 32):
        put(runs, f"r{r}", result("glue/cola", "lora", 42, {"mcc": 0.5}, r=r, sweeps=[]))
    make_tables([runs], tmp_path / "out", figures=False)
    assert list(md_rows(read(tmp_path / "out", "glue_roberta_base-single_runs.md"))) == \
        ["LoRA (r=4)", "LoRA (r=16)", "LoRA (r=32)"]


def test_fig4_colours_stable_and_guard(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for peft, d in (("lora", 1), ("capaboost_lora", 2), ("capaboost_lora", 4)):
        for r in (4, 8):
            _identity_grid(runs, peft, ["glue/cola"], seeds=(42, 43), r=r, d=d, sweeps=["fig4_r_by_d"])
    for r in (4, 8):  # d=3 only on RTE, d=4 on both: a per-panel colour cycle would repaint d=4
        _identity_grid(runs, "capaboost_lora", ["glue/rte"], seeds=(42, 43), r=r, d=3, sweeps=["fig4_r_by_d"])
        _identity_grid(runs, "capaboost_lora", ["glue/rte"], seeds=(42, 43), r=r, d=4, sweeps=["fig4_r_by_d"])
    _identity_grid(runs, "capaboost_lora", ["glue/mrpc"], seeds=(42,), r=4, d=2, sweeps=["fig4_r_by_d"])
    report = make_tables([runs], tmp_path / "out")
    fig = next(f for f in report.figure_specs if f.kind == "fig4_r_by_d")
    assert fig.panels == ["CoLA", "RTE"]  # MRPC: one point, left out
    assert any("MRPC: grid absent" in note for note in fig.notes)
    colours: dict[str, set] = {}
    for drawn in fig.drawn.values():
        for series, colour in drawn.items():
            colours.setdefault(series, set()).add(colour)
    assert set(fig.drawn["RTE"]) == {"CapaBoost-LoRA (d=3)", "CapaBoost-LoRA (d=4)"}
    assert all(len(c) == 1 for c in colours.values()) and len({next(iter(c)) for c in colours.values()}) == 4


def test_fig4_not_drawn_from_one_point(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _identity_grid(runs, "capaboost_lora", ["glue/rte"], r=8, sweeps=["fig4_r_by_d"])
    _identity_grid(runs, "lora", ["glue/rte"], r=8, sweeps=["fig4_r_by_d"])
    report = make_tables([runs], tmp_path / "out")
    assert not list((tmp_path / "out" / "figures").glob("fig4*"))
    assert any("RTE: grid absent (1 rank(s) x 2 value(s) of d)" in line for line in report.lines())


def test_fig1_uses_the_tables_glue_average_and_measured_rank(tmp_path: Path) -> None:
    """Fig. 1's GLUE value is the table's Avg (11 numbers, MRPC/QQP/STS-B twice), not a task mean;
    a run without a measured rank is left out of the rank panel, never replaced by d*r."""
    runs = tmp_path / "runs"
    arms = [("lora", 1, 4, 4.0), ("lora", 1, 8, 8.0), ("capaboost_lora", 2, 4, 8.0),
            ("capaboost_lora", 2, 8, None)]
    expected = {}
    for peft, d, r, rank in arms:
        for i, task in enumerate(GLUE_ORDER):
            for seed in (42, 43):
                m = {name: 0.60 + 0.03 * i + 0.01 * (name == "f1") + 0.002 * r + 0.01 * d
                     + 0.001 * (seed - 42)
                     for name in GLUE_METRICS[task]}
                put(runs, f"{peft}{d}-{r}-{task.replace('/', '_')}-{seed}", result(
                    task, peft, seed, m, r=r, d=d, rank=rank, sweeps=["fig1_rank_params"],
                    params={"trainable": 2000, "peft": 100 * r * d, "effective": 9999, "total": 101_000}))
        # the 11 numbers: mean over the two seeds of each, then their mean
        nums = [100 * (0.60 + 0.03 * GLUE_ORDER.index(t) + 0.01 * (m == "f1") + 0.002 * r + 0.01 * d + 0.0005)
                for t, m in ELEVEN]
        expected[(peft, r)] = (100 * 100 * r * d / 99_000, sum(nums) / 11, rank)
    report = make_tables([runs], tmp_path / "out")
    fig = next(f for f in report.figure_specs if f.kind == "fig1_rank_params")
    assert fig.ylabels["GLUE average"] == "GLUE average of 11 numbers (x100)"
    glue = fig.series("GLUE average")
    rank = fig.series("Rank of ΔW")
    def flat(pairs: list) -> list[float]:
        return [v for pair in pairs for v in pair]

    assert flat(glue["LoRA"]) == pytest.approx(flat([expected[("lora", 4)][:2], expected[("lora", 8)][:2]]))
    assert flat(glue["CapaBoost-LoRA (d=2)"]) == pytest.approx(flat([expected[("capaboost_lora", 4)][:2],
                                                                     expected[("capaboost_lora", 8)][:2]]))
    assert flat(rank["LoRA"]) == pytest.approx(flat([(expected[("lora", 4)][0], 4.0),
                                                     (expected[("lora", 8)][0], 8.0)]))
    assert flat(rank["CapaBoost-LoRA (d=2)"]) == pytest.approx([expected[("capaboost_lora", 4)][0], 8.0])
    assert any("r=8): no measured rank" in note for note in fig.notes)
    # the same Avg the table prints
    md = read(tmp_path / "out", "glue_roberta_base-fig1_rank_params.md")
    assert md_row(md, "LoRA (r=4)")[12] == f"{expected[('lora', 4)][1]:.2f} (min n=2)"
    assert md_row(md, "LoRA (r=4)")[13] == "4.0"  # the rank column
    pts = csv_rows(tmp_path / "out" / "figures" / "fig1_rank_params_roberta_base.csv")
    assert {p["ylabel"] for p in pts if p["panel"] == "GLUE average"} == {"GLUE average of 11 numbers (x100)"}


def test_fig3_arms_sparsity_and_subset(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for mask, density, acc in [("random", 0.3, 0.70), ("random", 0.5, 0.72), ("same", 0.3, 0.66),
                               ("same", 0.5, 0.69), ("none", 0.3, 0.65), ("none", 0.5, 0.65)]:
        for seed, delta in ((42, 0.0), (43, 0.02)):
            put(runs, f"f3-{mask}-{density}-{seed}", result(
                "glue/cola", "capaboost_lora", seed, {"mcc": acc + delta}, mask=mask, density=density,
                train_limit=10000, sweeps=["fig3_masks"]))
    report = make_tables([runs], tmp_path / "out")
    fig = next(f for f in report.figure_specs if f.kind == "fig3_masks")
    assert "10k-example training subset" in fig.title and fig.xlabel == "sparsity (1 - density)"
    assert fig.panels == ["CoLA"]
    series = fig.series("CoLA")
    assert set(series) == {"different masks", "same mask", "dropout only"}
    assert [x for x, _ in series["same mask"]] == pytest.approx([0.5, 0.7])  # sparsity = 1 - density
    assert [y for _, y in series["same mask"]] == pytest.approx([70.0, 67.0])
    pts = csv_rows(tmp_path / "out" / "figures" / "fig3_masks_roberta_base.csv")
    got = {(p["series"], float(p["x"])): float(p["yerr"]) for p in pts}
    assert got[("same mask", 0.5)] == pytest.approx(sample_std([69.0, 71.0]), abs=1e-4)


def test_no_fig3_without_a_mask_or_density_contrast(tmp_path: Path) -> None:
    """Runs on a training subset that vary neither mask nor density (the demo) draw no Fig. 3."""
    runs = tmp_path / "runs"
    for seed in (42, 43):
        for d in (2, 4):  # the demo's arms differ in d only
            put(runs, f"one-{d}-{seed}", result("glue/sst2", "capaboost_lora", seed, {"accuracy": 0.9},
                                                train_limit=2000, d=d))
    make_tables([runs], tmp_path / "out")
    assert not list((tmp_path / "out" / "figures").glob("fig3_masks*"))


def test_vtab_both_averages(tmp_path: Path) -> None:
    from reporting.layout import layouts

    runs = tmp_path / "runs"
    cols = layouts()["vtab"].columns
    assert len(cols) == 19
    for i, c in enumerate(cols):
        put(runs, f"v{i}", result(c.task, "lora", 42, {"accuracy": 0.5 + 0.01 * i}, model="vit-b16"))
    make_tables([runs], tmp_path / "out", figures=False)
    md = read(tmp_path / "out", "vtab_vit_b16.md")
    head = next(line for line in md.splitlines() if line.startswith("| Method"))
    assert "| Natural | Specialized | Structured | Avg (19) | Avg (groups) |" in head
    row = md_row(md, "LoRA")
    groups: dict[str, list[float]] = {}
    for i, c in enumerate(cols):
        groups.setdefault(c.group, []).append(50 + i)
    means = {g: sum(v) / len(v) for g, v in groups.items()}
    n = len(cols)
    assert row[1 + n] == f"{means['natural']:.2f} (min n=1)"
    assert row[3 + n] == f"{means['structured']:.2f} (min n=1)"
    assert row[4 + n] == f"{sum(50 + i for i in range(n)) / n:.2f} (min n=1)"
    assert row[5 + n] == f"{sum(means.values()) / 3:.2f} (min n=1)"
    assert abs(sum(means.values()) / 3 - sum(50 + i for i in range(n)) / n) > 0.1  # they do differ
    assert "Avg (groups): mean of the 3 group means" in md


def test_peft_params_rank_mnli_and_tex(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for seed in (42, 43):
        put(runs, f"m{seed}", result("glue/mnli", "capaboost_lora", seed,
                                     {"accuracy": 0.85, "accuracy_mismatched": 0.84 + 0.01 * (seed - 42)},
                                     rank=15.5, params={"trainable": 1000, "peft": 230, "effective": 900,
                                                        "total": 101_000}))
    make_tables([runs], tmp_path / "out", figures=False)
    md = read(tmp_path / "out", "glue_roberta_base.md")
    head = next(line for line in md.splitlines() if line.startswith("| Method"))
    assert "| MNLI-m |" in head and head.endswith("| Avg | Rank | Params % |")
    row = md_row(md, "CapaBoost-LoRA (d=2, density=0.5)")
    assert row[9] == "85.00 ± 0.00 (n=2)"
    assert row[-2] == "15.5" and row[-1] == f"{100 * 230 / 100_000:.3g}" == "0.23"
    assert "MNLI-m: matched accuracy" in md
    c = csv_rows(tmp_path / "out" / "tables" / "glue_roberta_base.csv")[-1]
    assert float(c["glue/mnli:accuracy_mismatched:mean"]) == pytest.approx(84.5)
    assert float(c["glue/mnli:accuracy_mismatched:std"]) == pytest.approx(sample_std([84.0, 85.0]), abs=1e-4)
    assert c["params_flags"] == "" and float(c["rank"]) == 15.5
    tex = read(tmp_path / "out", "glue_roberta_base.tex")
    assert r"\usepackage{booktabs}" in tex and r"\toprule" in tex
    assert r"MNLI-m: matched accuracy" in tex and r"$\Delta W$" in tex
    assert "_" not in tex.replace(r"\_", "")  # every underscore escaped


def test_unfinished_runs_are_listed(tmp_path: Path) -> None:
    import socket

    from tasks.cluster.runlock import pid_namespace

    runs = tmp_path / "runs"
    put(runs, "done", result("glue/cola", "lora", 42, {"mcc": 0.5}))
    (runs / "live").mkdir()
    (runs / "live" / "status.json").write_text(json.dumps(
        {"status": "running", "host": "gpu7", "pid": 4242, "started": "t0", "updated": "2026-01-01T10:00"}))
    (runs / "live" / "run.lock").write_text(json.dumps(   # its holder, on another node, beating
        {"host": "gpu7", "pid": 4242, "started": 0, "token": "t"}))
    (runs / "killed").mkdir()   # SIGKILLed: status.json stays "running", its lock's pid is gone
    (runs / "killed" / "status.json").write_text(json.dumps(
        {"status": "running", "host": socket.gethostname(), "pid": 2**22 + 3, "updated": "t2"}))
    (runs / "killed" / "run.lock").write_text(json.dumps(
        {"host": socket.gethostname(), "pidns": pid_namespace(), "pid": 2**22 + 3, "started": 0,
         "token": "k"}))
    (runs / "dead").mkdir()
    (runs / "dead" / "status.json").write_text(json.dumps(
        {"status": "failed", "host": "gpu3", "pid": 11, "started": "t0", "updated": "t1",
         "error": "CUDA OOM"}))
    report = make_tables([runs], tmp_path / "out", figures=False)
    lines = report.lines()
    assert "3 run dir(s) without result.json (running, or died):" in lines
    killed = next(ln for ln in lines if str((runs / "killed").resolve()) in ln)
    assert killed.startswith("  dead ") and "no longer exists" in killed
    assert f"  failed {(runs / 'dead').resolve()} (host gpu3, pid 11, last update t1): CUDA OOM" in lines
    live = (runs / "live").resolve()
    assert f"  running {live} (host gpu7, pid 4242, last update 2026-01-01T10:00)" in lines


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
    md = read(tmp_path / "out", "glue_roberta_base.md")
    row = md_row(md, "LoRA")
    assert row[1] == "60.00 (n=1) (paper 61.50)" and row[-1] == "7.5* (paper 0.24)"
    assert "paper" not in md_row(md, "CapaBoost-LoRA (d=2, density=0.5)")[1]
    assert md_row(md, "CapaBoost-LoRA (paper)")[1] == "70.00"  # unmatched paper rows stand alone
    fixture = read(tmp_path / "out", "glue_roberta_base-fixture.md")
    assert "61.50" not in fixture and "70.00" not in fixture


def test_paper_value_not_beside_several_rows(tmp_path: Path) -> None:
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "glue_roberta_base.csv").write_text(
        "method,model,peft,d,density,reference,glue/cola:mcc\nLoRA,roberta-base,lora,1,1.0,test,61.5\n")
    runs = tmp_path / "runs"
    for r in (8, 16):
        put(runs, f"r{r}", result("glue/cola", "lora", 42, {"mcc": 0.6}, r=r))
    make_tables([runs], tmp_path / "out", paper_dir=paper, figures=False)
    md = read(tmp_path / "out", "glue_roberta_base.md")
    assert "(paper 61.50)" not in md and md_row(md, "LoRA (paper)")[1] == "61.50"


def test_paired_file_matches_scipys_paired_t_test(tmp_path: Path) -> None:
    """Each CapaBoost row against the LoRA row nearest in PEFT parameters, paired by seed; the interval
    is scipy's ttest_rel confidence interval and the verdict reads its sign."""
    import numpy as np
    from scipy import stats

    seeds = [42, 43, 44, 45, 46]
    lora = [0.80, 0.82, 0.79, 0.81, 0.83]
    arms = {("lora", 3, 1): (lora, 300), ("lora", 6, 1): (lora, 600),
            ("capaboost_lora", 4, 2): ([0.84, 0.85, 0.83, 0.86, 0.85], 305),   # clearly above LoRA r=3
            ("capaboost_lora", 8, 2): ([0.81, 0.80, 0.80, 0.83, 0.82], 590)}  # mixed signs vs LoRA r=6
    for (peft, r, d), (xs, size) in arms.items():
        for seed, x in zip(seeds, xs, strict=True):
            put(tmp_path / "runs", f"{peft}-{r}-{seed}", result(
                "glue/stsb", peft, seed, {"pearson": x, "spearman": x}, r=r, d=d, sweeps=["x"],
                params={"trainable": 2 * size, "effective": 2 * size, "peft": size, "total": 10**6}))
    put(tmp_path / "runs", "no-peft-count", result("glue/stsb", "lora", 42, {"pearson": 0.1}, r=12,
                                                   sweeps=["x"]))
    make_tables([tmp_path / "runs"], tmp_path)
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in read(tmp_path, "glue_roberta_base-x-paired.md").splitlines() if "| STS-B P |" in line]
    # nearest size; the row without a PEFT count is left out
    assert [(r[1], r[3]) for r in rows] == [("305", "300"), ("590", "600")]
    for row, capa, verdict in ((rows[0], arms[("capaboost_lora", 4, 2)][0], "CapaBoost better"),
                               (rows[1], arms[("capaboost_lora", 8, 2)][0], "within noise")):
        oracle = stats.ttest_rel(100 * np.array(capa), 100 * np.array(lora)).confidence_interval(0.95)
        assert row[6] == f"[{oracle.low:+.2f}, {oracle.high:+.2f}]" and row[7] == "5" and row[8] == verdict
    worse = [0.70, 0.72, 0.69, 0.71, 0.73]
    small = {"sweeps": ["x"], "params": {"peft": 300, "total": 10**6}}
    for seed, x, y in zip(seeds, worse, lora, strict=True):
        put(tmp_path / "worse", f"c{seed}", result("glue/stsb", "capaboost_lora", seed, {"pearson": x}, r=4,
                                                   **small))
        rule = "best_test_epoch" if seed == 46 else "best_select_epoch"
        put(tmp_path / "worse", f"l{seed}", result("glue/stsb", "lora", seed, {"pearson": y}, r=3, **small,
                                                   rule=rule))
    make_tables([tmp_path / "worse"], tmp_path / "w")
    text = read(tmp_path / "w", "glue_roberta_base-x-paired.md")
    assert "| CapaBoost worse‡ |" in text  # one LoRA seed chose its epoch on the test set: the table's mark
    assert "- ‡: at least one seed chose its epoch on the test set (selection rule best_test_epoch)" in text


def test_prefix_params_pct_is_the_inference_prefix(tmp_path: Path) -> None:
    """Prefix rows: Params % = the prefix kept at inference (64 x 2 x 12 x 768 = 1,179,648 of RoBERTa-base's
    ~124.6M frozen weights), not the training-time MLP count; that one stays in the .csv and result.json."""
    runs = tmp_path / "runs"
    inference, training, frozen = 64 * 2 * 12 * 768, 10_431_744, 124_645_632
    params = {"trainable": training + 1000, "peft": training, "effective": training + 1000,
              "total": frozen + training + 1000, "prefix_inference": inference}
    for seed in (42, 43):
        put(runs, f"p{seed}", result("glue/rte", "prefix", seed, {"accuracy": 0.7}, params=params))
    make_tables([runs], tmp_path / "out", figures=False)
    md = read(tmp_path / "out", "glue_roberta_base.md")
    assert md_row(md, "Prefix")[-1] == f"{100 * inference / frozen:.3g}" == "0.946"
    assert "Params % of prefix rows: the prefix kept at inference" in md
    c = csv_rows(tmp_path / "out" / "tables" / "glue_roberta_base.csv")[-1]
    assert float(c["params_pct"]) == pytest.approx(100 * inference / frozen, abs=1e-4)
    assert float(c["params_pct_training"]) == pytest.approx(100 * training / frozen, abs=1e-4)


def test_switch_rows_pair_with_the_same_experiment_on_our_side(tmp_path: Path) -> None:
    """A row with a switch on the authors' side (peft.init=official, trainer.clip=official, task.report=
    final_epoch) pairs, by seed, with the row that is the same experiment with every switch on ours; the
    interval is scipy's ttest_rel one. Rows that differ in anything else do not pair."""
    import numpy as np
    from scipy import stats

    seeds = [42, 43, 44, 45, 46]
    ours = [0.80, 0.82, 0.79, 0.81, 0.83]
    arms = {"ours": ({}, ours), "init": ({"capaboost.init": "official"}, [0.77, 0.80, 0.78, 0.78, 0.80]),
            "clip": ({"trainer.clip": "official"}, [0.81, 0.81, 0.80, 0.82, 0.82]),
            "other_lr": ({"trainer.lr": 0.1}, [0.5] * 5)}  # not a switch: no pair
    for arm, (changes, xs) in arms.items():
        for seed, x in zip(seeds, xs, strict=True):
            res = result("glue/stsb", "capaboost_lora", seed, {"pearson": x}, r=4,
                         sweeps=["x"], params={"trainable": 700, "peft": 305, "total": 10**6})
            for key, value in changes.items():
                section, leaf = key.split(".")
                res["identity"].setdefault(section, {})[leaf] = value
            put(tmp_path / "runs", f"{arm}-{seed}", res)
    make_tables([tmp_path / "runs"], tmp_path)
    text = read(tmp_path, "glue_roberta_base-x-paired.md")
    assert "every switch on ours" in text and "| authors' side |" in text
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in text.splitlines() if "| STS-B P |" in ln]
    assert [r[0] for r in rows] == ["CapaBoost-LoRA (d=2, density=0.5, init=official)",
                                    "CapaBoost-LoRA (d=2, density=0.5, clip=official)"]
    assert {r[2] for r in rows} == {"CapaBoost-LoRA (d=2, density=0.5)"}
    for row, arm, verdict in ((rows[0], "init", "authors' side worse"), (rows[1], "clip", "within noise")):
        oracle = stats.ttest_rel(100 * np.array(arms[arm][1]), 100 * np.array(ours)).confidence_interval(0.95)
        assert row[6] == f"[{oracle.low:+.2f}, {oracle.high:+.2f}]" and row[8] == verdict


def test_every_row_note_reads_defaults_from_the_schema(tmp_path: Path) -> None:
    """A run left at the schema's default precision (auto) is not called out; one set to fp32 is. The
    tables once kept their own copy of the defaults (precision fp32), which reported the default run as
    `precision=auto` and hid the fp32 one."""
    from dataclasses import fields

    from tasks.config.identity import identity_key
    from tasks.config.schema import MethodRecipe

    def notes(precision: str | None) -> str:
        runs, out = tmp_path / f"runs-{precision}", tmp_path / f"out-{precision}"
        for seed in (42, 43):
            res = result("glue/cola", "lora", seed, {"mcc": 0.5 + seed / 1000})
            keys = {f.name for f in fields(MethodRecipe)}  # the recipe as the runner records it
            res["config"]["recipe"] = {m: {k: v for k, v in r.items() if k in keys}
                                       for m, r in res["config"]["recipe"].items()}
            if precision is not None:  # as resolve records trainer.precision=<precision>
                res["identity"]["hparams"]["precision"] = res["identity"]["trainer"]["precision"] = precision
                res["identity_key"] = identity_key(res["identity"])
            put(runs, f"cola-{seed}", res)
        make_tables([runs], out, figures=False)
        md = read(out, "glue_roberta_base.md")
        return next((line for line in md.splitlines() if "Every row:" in line), "")

    assert "precision" not in notes(None)
    assert "precision=fp32" in notes("fp32")


def test_a_result_with_the_required_keys_only_is_grouped_by_its_top_level_keys(tmp_path: Path) -> None:
    """Another tool's result.json (tasks.result.REQUIRED only, no identity, no sweeps): a row per PEFT
    preset and CapaBoost coordinates, in a table of unknown data, never beside the paper."""
    from tasks.result import REQUIRED

    runs = tmp_path / "runs"
    xs = {("lora", 1): [0.60, 0.62, 0.64], ("capaboost_lora", 2): [0.63, 0.65, 0.70],
          ("capaboost_lora", 4): [0.50, 0.52, 0.54]}
    for (peft, d), values in xs.items():
        for seed, x in zip((42, 43, 44), values, strict=True):
            full = result("glue/cola", peft, seed, {"mcc": x}, d=d)
            put(runs, f"{peft}-{d}-{seed}", {k: v for k, v in full.items() if k in REQUIRED})
    make_tables([runs], tmp_path / "out", figures=False)
    md = read(tmp_path / "out", "glue_roberta_base-unknown-single_runs.md")
    assert "NOT comparable to the paper" in md and "(paper" not in md
    for label, key in (("LoRA", ("lora", 1)), ("CapaBoost-LoRA (d=2, density=0.5)", ("capaboost_lora", 2)),
                       ("CapaBoost-LoRA (d=4, density=0.5)", ("capaboost_lora", 4))):
        values = [100 * x for x in xs[key]]
        assert md_row(md, label)[1] == f"{sum(values) / 3:.2f} ± {sample_std(values):.2f}"
