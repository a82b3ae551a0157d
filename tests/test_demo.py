"""The offline demo: AFINN conversion on the real lexicon, the capacity check, and a fast end-to-end run.

Oracles: the raw AFINN file parsed here (not by demo.afinn), the runner's own GLUE loader, numpy's
matrix rank of an explicitly summed masked product, and the Eckart-Young bound from numpy's SVD.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import capaboost
from capaboost.analysis import delta_rank
from demo import afinn, capacity

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
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return afinn.ensure(tmp_path_factory.mktemp("afinn"))


def _load(path: Path):
    from datasets import load_from_disk

    return load_from_disk(str(path))


# --- AFINN conversion -------------------------------------------------------------------------------

def test_real_lexicon_counts_and_splits(converted: dict[str, Path]) -> None:
    raw = _raw_lexicon()
    assert 3300 <= len(raw) <= 3500, len(raw)  # AFINN-165: ~3.4k entries
    stsb, sst2 = _load(converted["stsb"]), _load(converted["sst2"])
    assert set(stsb) == set(sst2) == {"train", "validation"}
    # every entry exactly once in STS-B; SST-2 drops the unsigned (valence 0) entries only
    stsb_words = {s: list(stsb[s]["sentence1"]) for s in stsb}
    assert sorted(stsb_words["train"] + stsb_words["validation"]) == sorted(raw)
    unsigned = {w for w, v in raw.items() if v == 0}
    sst2_words = {s: list(sst2[s]["sentence"]) for s in sst2}
    assert sorted(sst2_words["train"] + sst2_words["validation"]) == sorted(set(raw) - unsigned)
    for words in (stsb_words, sst2_words):
        assert not set(words["train"]) & set(words["validation"]), "a word is in two splits"
    assert 0.15 < len(stsb_words["validation"]) / len(raw) < 0.25
    assert all(set(stsb[s]["sentence2"]) == {afinn.STSB_ANCHOR} for s in stsb)


def test_label_balance_is_reported_and_stratified(converted: dict[str, Path]) -> None:
    sst2 = _load(converted["sst2"])
    info = afinn.load_info(converted["sst2"].parent)["stats"]
    for split in ("train", "validation"):
        labels = np.array(sst2[split]["label"])
        print(f"SST-2 AFINN {split}: {len(labels)} examples, {labels.mean():.3f} positive")
        assert info[split]["sst2_examples"] == len(labels)
        assert info[split]["sst2_positive_fraction"] == pytest.approx(labels.mean(), abs=1e-4)
    fractions = [np.mean(sst2[s]["label"]) for s in ("train", "validation")]
    assert abs(fractions[0] - fractions[1]) < 0.02  # stratified by valence
    assert 0.25 < fractions[0] < 0.45  # AFINN is mostly negative: the demo reports it, not hides it


@pytest.mark.parametrize("word,valence", [("abandon", -2), ("bastard", -5), ("good", 3),
                                          ("outstanding", 5), ("does not work", -3), ("naïve", -2)])
def test_valence_mapping_on_known_words(converted: dict[str, Path], word: str, valence: int) -> None:
    assert _raw_lexicon()[word] == valence  # the raw file agrees with what we expect of it
    stsb, sst2 = _load(converted["stsb"]), _load(converted["sst2"])
    stsb_rows = [(s, i) for s in stsb for i, w in enumerate(stsb[s]["sentence1"]) if w == word]
    sst2_rows = [(s, i) for s in sst2 for i, w in enumerate(sst2[s]["sentence"]) if w == word]
    assert len(stsb_rows) == len(sst2_rows) == 1
    (s, i), (t, j) = stsb_rows[0], sst2_rows[0]
    assert s == t  # same split in both tasks
    assert stsb[s][i]["label"] == pytest.approx((valence + 5) / 2)
    assert 0.0 <= stsb[s][i]["label"] <= 5.0
    assert sst2[t][j]["label"] == int(valence > 0)


def test_hub_schema_and_runner_loader(converted: dict[str, Path]) -> None:
    from tasks.data import load_glue

    sst2, stsb = _load(converted["sst2"]), _load(converted["stsb"])
    assert sst2["train"].features["label"].names == ["negative", "positive"]
    assert list(sst2["train"].features) == ["sentence", "label", "idx"]
    assert list(stsb["train"].features) == ["sentence1", "sentence2", "label", "idx"]
    assert stsb["train"].features["label"].dtype == "float32"
    assert list(sst2["validation"]["idx"]) == list(range(len(sst2["validation"])))
    # the runner finds <data.path>/<task> by itself and applies its split protocol
    glue = load_glue("stsb", source=converted["stsb"].parent, protocol="split")
    assert len(glue["select"]) + len(glue["report"]) == len(stsb["validation"])


def test_regenerated_only_when_missing_or_stale(tmp_path: Path) -> None:
    dirs = afinn.ensure(tmp_path)
    stamp = (tmp_path / "afinn.json").stat().st_mtime_ns
    afinn.ensure(tmp_path)
    assert (tmp_path / "afinn.json").stat().st_mtime_ns == stamp  # fresh: nothing rewritten
    import shutil

    shutil.rmtree(dirs["stsb"])
    afinn.ensure(tmp_path)
    assert (dirs["stsb"] / "dataset_dict.json").is_file()
    assert len(afinn.ensure(tmp_path, seed=1)) == 2  # another split seed rebuilds (stamp differs)
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


# --- fast end-to-end demo ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "run.py").is_file() or not (ROOT / "scripts" / "make_tables.py").is_file(),
                    reason="needs the runner (run.py) and scripts/make_tables.py")
def test_fast_demo_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "scripts/demo.py", "--fast", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = sorted((tmp_path / "runs").rglob("result.json"))
    assert len(results) == 4  # 2 tasks x (LoRA r=6, CapaBoost r=8 d=2) x 1 seed
    pefts = {json.loads(p.read_text())["peft"] for p in results}
    assert pefts == {"lora", "capaboost_lora"}
    tables = list((tmp_path / "tables").glob("*.md"))
    assert tables and "CapaBoost" in tables[0].read_text()
    assert (tmp_path / "figures" / "capacity.png").is_file()
    assert (tmp_path / "capacity.json").is_file()
    assert "CapaBoost r=8 d=2" in (tmp_path / "demo_summary.md").read_text()
    assert "total wall time" in proc.stdout
    # re-running skips the finished runs
    again = subprocess.run([sys.executable, "scripts/demo.py", "--fast", "--out", str(tmp_path),
                            "--skip-capacity"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "4 already finished, 0 to run" in again.stdout


def test_matched_parameter_summary(tmp_path: Path) -> None:
    from demo import compare

    scores = {("lora", 6, 1): [0.90, 0.92, 0.94], ("capaboost_lora", 8, 2): [0.95, 0.96, 0.97]}
    for (peft, r, d), xs in scores.items():
        for seed, x in zip((42, 43, 44), xs, strict=True):
            run = tmp_path / f"{peft}-{seed}"
            run.mkdir()
            (run / "result.json").write_text(json.dumps({
                "task": "glue/sst2", "peft": peft, "d": d, "seed": seed, "status": "completed",
                "main_metric": "accuracy", "best": {"accuracy": x}, "hparams": {"r": r},
                "params": {"effective": 1000}, "config": {"peft": {"r": r}}}))
    text = compare.summarize(tmp_path)
    lora_mean, lora_std = 100 * np.mean(scores[("lora", 6, 1)]), 100 * np.std(scores[("lora", 6, 1)], ddof=1)
    assert f"accuracy {lora_mean:.2f} ± {lora_std:.2f} (n=3)" in text
    gap = 100 * (np.mean(scores[("capaboost_lora", 8, 2)]) - np.mean(scores[("lora", 6, 1)]))
    assert f"gap {gap:+.2f}" in text and "CapaBoost better" in text
