"""task=math/gsm8k (PEFT's MetaMathQA -> GSM8K benchmark): answer rule, data protocol, loss mask, and the
offline run end to end (result.json, PEFT-format file, make tables with PEFT's published rows)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tasks import peft_result as peft_format
from tasks.facts import math as mp
from tasks.suites.metrics import math_accuracy, math_answer

ROOT = Path(__file__).resolve().parents[3]
PUBLISHED = ROOT / "results" / "peft_bench"


# --- the answer rule, on outputs written here --------------------------------------------------------

@pytest.mark.parametrize("output, expected", [
    ("Question: Sam has 3. Think step by step.\nAnswer: 3 + 4 = 7.\nThe answer is: 7", 7.0),
    ("so he pays 12 dollars. The answer is 12.", 12.0),
    ("The final answer is: 3/4", 0.75),
    ("The final answer is 5!", 5.0),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", 72.0),
    ("The answer is: $50%", 50.0),                        # ' .!?$%' stripped
    ("The answer is: 2.50", 2.5),
    ("The answer is: 5\nQuestion: next question, The answer is: 9", 9.0),  # the LAST occurrence...
    ("The answer is: 5\nThen we stop", 5.0),             # ... cut at the first newline
    ("#### 3\nThe answer is: 4", 4.0),                   # 'The answer is: ' precedes '#### ' in the list
    ("The final answer is: 8 and The answer is 6", 6.0),  # 'The answer is ' precedes 'The final ...'
    ("#### 1,000", "1,000"),                             # commas: not a number, compared as text
    ("The answer is: x = 4", "x = 4"),
    ("The answer is: 1/0", "1/0"),                       # division by zero: text
    ("The answer is: 1/2/3", "1/2/3"),
    ("Sam has 7 apples.", None),                         # no delimiter: no answer
    ("", None),
])
def test_answer_rule(output, expected):
    assert math_answer(output) == expected


def test_lenient_answers_drop_commas_only_when_switched_on():
    assert math_answer("#### 1,000") == "1,000"
    assert math_answer("#### 1,000", lenient=True) == 1000.0


def test_accuracy_compares_numbers_fractions_and_text():
    golds = ["He has 7.\n#### 7", "#### 1000", "#### 4", "#### 0.5", "#### 12", "#### blue"]
    outputs = ["The answer is: 7.0",        # 7.0 == 7: right
               "The answer is: 1,000",      # commas: wrong (PEFT's rule)
               "I think it is 4",           # no delimiter: wrong
               "The answer is: 1/2",        # fraction == 0.5: right
               "The answer is: 13",         # wrong number
               "The answer is: blue"]       # text answers compare as text: right
    assert math_accuracy(outputs, golds) == pytest.approx(3 / 6)
    assert math_accuracy(outputs, golds, lenient=True) == pytest.approx(4 / 6)
    # 20/35 and its decimal are the same float, as in PEFT's comparison
    assert math_accuracy(["The answer is: 20/35"], ["#### 0.5714285714285714"]) == 1.0
    with pytest.raises(ValueError, match="no answer delimiter"):
        math_accuracy(["The answer is: 3"], ["three"])


# --- data: filter, validation sample, prompt, order, loss mask ---------------------------------------

def test_length_filter_and_validation_sample_on_the_fixture():
    from tasks.data import fixtures
    from tasks.data.load import load_math

    state = np.random.get_state()[1].copy()
    raw = load_math("fixture")
    assert (np.random.get_state()[1] == state).all()  # the global numpy RNG is left as it was
    metamath, gsm8k = fixtures.metamathqa_raw()["train"], fixtures.gsm8k_raw()
    kept = [i for i in range(len(metamath))
            if len(metamath[i]["query"]) + 1 + len(metamath[i]["response"]) <= 1300]
    assert 0 < len(kept) < len(metamath)  # the fixture has rows on both sides of the limit
    assert raw["train"]["query"] == [metamath[i]["query"] for i in kept]
    assert raw["train"]["response"] == [metamath[i]["response"] for i in kept]  # unshuffled
    # oracle: the legacy numpy permutation under seed 0 (PEFT: np.random.seed(0); np.random.shuffle)
    first50 = np.random.RandomState(0).permutation(len(gsm8k["train"]))[:50]
    assert raw["select"]["query"] == [gsm8k["train"][int(i)]["question"] for i in first50]
    assert raw["select"]["response"][0].split("#### ")[-1].isdigit()
    assert raw["report"]["query"] == gsm8k["test"]["question"]  # the whole test split


def test_local_copies_load_as_the_hub_shapes_them(tmp_path):
    from tasks.config.runspec import ConfigError
    from tasks.data import fixtures
    from tasks.data.load import load_math
    from tests.runs import spec_for

    fixtures.metamathqa_raw().save_to_disk(str(tmp_path / "metamathqa"))
    with pytest.raises(ConfigError, match="lacks a save_to_disk DatasetDict for gsm8k"):
        spec_for(["task=math/gsm8k", "model=tiny-llama", f"data.path={tmp_path}"], tmp_path, tiny=False)
    fixtures.gsm8k_raw().save_to_disk(str(tmp_path / "GSM8K"))
    local, fixture = load_math(tmp_path), load_math("fixture")
    assert {k: local[k][:] for k in local} == {k: fixture[k][:] for k in fixture}


def test_prompt_and_generation_length():
    assert mp.prompt("What is 2 + 2?") == "Question: What is 2 + 2? Think step by step.\nAnswer:"
    assert mp.generation_max_length(40) == 340
    assert mp.generation_max_length(600) == 800


def test_bucket_order_sorts_each_bucket_longest_first():
    lengths = [3, 9, 5, 7, 2, 8, 6, 4, 1, 10]
    protocol = mp.Protocol(bucket_factor=2)  # batch 2 -> buckets of 4: [0-3] [4-7] [8-9], [8-9] again
    assert mp.bucket_order(lengths, 2, protocol) == [1, 3, 2, 0, 5, 6, 7, 4, 9, 8, 9, 8]


def test_loss_mask_keeps_the_first_eos_and_masks_after_it():
    from tasks.suites.math import CausalCollator

    eos = 2
    rows = [{"input_ids": [1, 11, 12], "prompt_length": 2},
            {"input_ids": [1, 21, 22, 23, 24], "prompt_length": 3}]
    batch = CausalCollator(eos)(rows)
    assert batch["input_ids"].tolist() == [[1, 11, 12, eos, eos], [1, 21, 22, 23, 24]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[1, 11, 12, eos, -100], [1, 21, 22, 23, 24]]
    response_only = CausalCollator(eos, response_only=True)(rows)["labels"].tolist()
    assert response_only == [[-100, -100, 12, eos, -100], [-100, -100, -100, 23, 24]]


def test_published_rows_read_back():
    lora = peft_format.read(PUBLISHED / "lora--llama-3.2-3B-rank32.json")
    assert (lora.method, lora.trainable, lora.gpu) == ("lora", 9_175_040, "NVIDIA L40S")
    assert lora.accuracy == pytest.approx(0.4784, abs=5e-5)
    assert lora.peak_memory == 22_292_725_760 and round(lora.train_time) == 942
    shira = peft_format.read(PUBLISHED / "shira--llama-3.2-3B-lr_0.0003-random_seed_42.json")
    assert shira.accuracy == pytest.approx(0.5102, abs=5e-5)
    with pytest.raises(ValueError, match="not a PEFT result file"):
        peft_format.read(PUBLISHED / "SOURCE.md")


def test_switches_are_checked_before_any_work(tmp_path):
    from tasks.config.runspec import ConfigError
    from tests.runs import spec_for

    with pytest.raises(ConfigError, match="causal LM"):
        spec_for(["task=math/gsm8k", "model=tiny"], tmp_path, tiny=False)
    spec = spec_for(["task=math/gsm8k", "model=tiny-llama", "task.switches.greedy=true"], tmp_path,
                    tiny=False)
    assert spec.hparams["max_seq_length"] == 768 and spec.seed == 0 and spec.hparams["lr"] == 1e-4


# --- the offline run, end to end ---------------------------------------------------------------------

OFFLINE = ["task=math/gsm8k", "model=tiny-llama", "data=fixture", "logger=none", "trainer.max_steps=8",
           "data.eval_limit=4", "trainer.progress=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.runs import run

    root = tmp_path_factory.mktemp("math_runs")
    return root, {peft: run([*OFFLINE, f"peft={peft}"], root, tiny=False)
                  for peft in ("lora", "capaboost_lora")}


@pytest.mark.slow
def test_offline_runs_write_result_and_peft_format(runs):
    root, results = runs
    for peft, result in results.items():
        run_dir = Path(result["run_dir"])
        on_disk = json.loads((run_dir / "result.json").read_text())
        accuracy = on_disk["metrics"]["accuracy"]
        assert 0.0 <= accuracy <= 1.0 and on_disk["global_step"] == 8
        assert [sorted(r) for r in on_disk["history"]][-1] == ["epoch", "report", "select", "step"]
        row = peft_format.read(run_dir / peft_format.RUN_FILE, origin="ours")  # the reader takes it back
        assert row.accuracy == accuracy
        assert row.trainable == on_disk["params"]["peft"]
        assert row.method == peft
    lora, cb = results["lora"]["params"], results["capaboost_lora"]["params"]
    assert lora["peft"] == lora["trainable"]  # vanilla: every stored entry is used
    assert cb["peft"] < cb["trainable"] == lora["trainable"]  # same r: d=2 masks at 0.5 keep ~3/4


@pytest.mark.slow
def test_make_tables_puts_both_kinds_of_rows_in_one_table(runs, tmp_path, capsys):
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_tables import main

    root, _ = runs
    assert main(["--runs", str(root), "--peft-results", str(PUBLISHED), "--out", str(tmp_path)]) == 0
    table = (tmp_path / "tables" / "peft_bench.md").read_text()
    printed = capsys.readouterr().out
    assert "| PEFT | lora (rank32) | r 32, α 64, q/v, lr 0.0001 | 9,175,040 | 47.84 |" in table
    assert table.count("| ours | ") == 2 and "| ours | capaboost_lora" in table
    assert table.splitlines()[0] in printed
    assert (tmp_path / "figures" / "peft_bench.png").stat().st_size > 10_000
    assert len((tmp_path / "figures" / "peft_bench.csv").read_text().splitlines()) == 1 + 18 + 2


@pytest.mark.slow
def test_sweep_arms_count_on_llama_3_2_3b_built_from_its_config_facts(tmp_path):
    """LoRA r32 on q/v has PEFT's published 9,175,040 parameters; CapaBoost r43 d2 stays within 1%."""
    from preflight.build import build
    from tests.runs import spec_for

    counts = {}
    for arm in ("lora_r32", "capaboost_r43_d2"):
        spec = spec_for(["task=math/gsm8k", "model=llama-3.2-3b", f"+sweep/peft_bench_arm={arm}"], tmp_path,
                        tiny=False)
        counts[arm] = build(spec, "fp32").counts["peft"]
    assert counts["lora_r32"] == 9_175_040
    assert abs(counts["capaboost_r43_d2"] / 9_175_040 - 1) < 0.01
    assert counts["capaboost_r43_d2"] == 9_248_150  # the figure the sweep file and README quote


def test_peft_rows_keep_rounds_from_before_a_restart():
    from tasks.suites.math import _rows

    history = [{"step": 250, "select": {"accuracy": 0.3}},
               {"step": 500, "select": {"accuracy": 0.4}, "report": {"accuracy": 0.45}}]
    live = [{"step": 500, "valid accuracy": 0.4, "eval time": 1.0}, {"step": 500, "test accuracy": 0.45}]
    assert _rows(history, live) == [{"step": 250, "valid accuracy": 0.3}, *live]


BASELINE_ARMS = {"dora": "lora--llama-3.2-3B-rank32-dora", "rslora": "lora--llama-3.2-3B-rank64-rslora",
                 "vera": "vera--llama-3.2-3B-default", "loha": "loha--llama-3.2-3B-rank32",
                 "adalora": "adalora--llama-3.2-3B-rank32"}


@pytest.mark.slow
@pytest.mark.parametrize("arm", sorted(BASELINE_ARMS))
def test_baseline_arm_is_peft_published_row(arm, tmp_path):
    """Each PEFT-library arm of sweeps/peft_bench builds, on Llama-3.2-3B from its config facts, PEFT's
    published row: the same trainable and total parameter counts, the same PEFT config field by field, the
    same lr and weight decay (PEFT's result file, results/peft_bench/, is the oracle)."""
    from preflight.build import build
    from tasks.training.baselines import schedule_steps
    from tests.runs import spec_for

    published = json.loads((PUBLISHED / f"{BASELINE_ARMS[arm]}.json").read_text())
    spec = spec_for(["task=math/gsm8k", "model=llama-3.2-3b", f"+sweep/peft_bench_arm={arm}"], tmp_path,
                    tiny=False)
    built = build(spec, "fp32")
    assert built.counts["peft"] == published["train_info"]["num_trainable_params"]
    assert built.counts["total"] == published["train_info"]["num_total_params"]
    ours = built.model.peft_config["default"].to_dict()
    theirs = published["run_info"]["peft_config"]
    # not the method: versions, hub name, wrapper class; AdaLoRA's schedule is set at train begin (below)
    # and its published rank_pattern is the pruning's outcome
    skip = {"peft_version", "base_model_name_or_path", "task_type", "target_modules", "tinit", "tfinal",
            "total_step", "rank_pattern"}
    differ = {k: (ours[k], theirs[k]) for k in set(ours) & set(theirs) - skip if ours[k] != theirs[k]}
    assert not differ
    assert set(ours["target_modules"]) == set(theirs["target_modules"])
    if arm == "adalora":
        steps = spec.hparams["max_steps"]
        assert (steps, *schedule_steps(spec.capaboost_config["options"], steps)) == (
            theirs["total_step"], theirs["tinit"], theirs["tfinal"])
    optimizer = published["run_info"]["train_config"]["optimizer_kwargs"]
    assert spec.hparams["lr"] == optimizer["lr"]
    assert spec.hparams["weight_decay"] == optimizer.get("weight_decay", 0.01)  # torch AdamW's default
