"""make preflight: each planted defect is named, counts and FLOPs agree with independent oracles.

Oracles: capaboost.count_parameters on the real (non-fake) model with its real masks; FLOPs and
live bytes counted by hand; dataset arithmetic by hand from the split sizes.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import capaboost
from preflight import cli, environment
from preflight.build import backbone, build
from preflight.callback import Preflight, PreflightFailed
from preflight.plan import Planner, RunCheck, Target
from preflight.trace import LiveBytes, trace_step
from tests.runs import compose, spec_for

SMALL = ["trainer.batch_size=8", "trainer.max_seq_length=32"]


def _real_counts(spec) -> tuple[dict[str, int], nn.Module]:
    """The same architecture built for real on the CPU (real weights and masks, no hook)."""
    from tasks.training.peft import attach_peft

    model, _ = attach_peft(backbone(spec), spec)
    return capaboost.count_parameters(model), model


@pytest.mark.parametrize("peft", ["capaboost_lora", "capaboost_padapter", "capaboost_prefix", "lora"])
def test_counts_match_the_real_model(tmp_path: Path, peft: str) -> None:
    spec = spec_for([f"peft={peft}", "task=glue/rte", "density=0.3", "d=3"], tmp_path)
    counts = build(spec).counts
    real, model = _real_counts(spec)
    assert {k: counts[k] for k in real} == real  # trainable, effective, total (capaboost's own count)
    if peft.endswith("lora"):  # PEFT-only: the union of each factor's masks, summed by hand
        union = sum(int(m.mask_A.any(0).sum()) + int(m.mask_B.any(0).sum())
                    for m in model.modules() if isinstance(m, capaboost.LoRALinear))
        assert counts["peft"] == union
        if peft == "lora":  # vanilla: r * (in + out) per target, 2 targets per layer
            h, layers, r = 32, 2, spec.hparams["r"]
            assert counts["peft"] == layers * 2 * r * (h + h)


def test_linear_flops_by_hand() -> None:
    """Two Linears, all weights trainable, input without grad: fwd 2B(ih+ho); bwd dW1, dW2, dX2."""
    b, i, h, o = 4, 8, 16, 6

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.one, self.two = nn.Linear(i, h), nn.Linear(h, o)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": self.two(self.one(x)).sum()}

    t = trace_step(Net(), lambda n: {"x": torch.randn(n, i)}, "fp32", 1, b)
    assert t.forward_flops == 2 * b * (i * h + h * o)
    assert t.backward_flops == 2 * b * i * h + 2 * (2 * b * h * o)


def test_attention_block_flops_by_hand() -> None:
    """RoBERTa self-attention + output: 4 projections (2BLH^2 each), QK^T and PV (2BL^2H each)."""
    from transformers import RobertaConfig
    from transformers.models.roberta.modeling_roberta import RobertaAttention

    b, seq, hid = 2, 10, 16
    cfg = RobertaConfig(hidden_size=hid, num_attention_heads=4, attention_probs_dropout_prob=0.0,
                        hidden_dropout_prob=0.0)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = RobertaAttention(cfg)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": self.attn(x)[0].sum()}

    t = trace_step(Block(), lambda n: {"x": torch.randn(n, seq, hid)}, "fp32", 1, b)
    proj, mix = 2 * b * seq * hid * hid, 2 * b * seq * seq * hid
    assert t.forward_flops == 4 * proj + 2 * mix
    # dW of the 4 projections, dX of the output projection (its input needs grad), 2 per attention matmul
    assert t.backward_flops == 4 * proj + proj + 4 * mix


def test_live_bytes_by_hand() -> None:
    with LiveBytes() as tracker:
        x = torch.zeros(1000)               # 4,000 bytes
        view = x[:10]                       # same storage: not counted again
        y = torch.ones(500, dtype=torch.float64)   # 4,000 more
        assert tracker.live == 8000 and view.numel() == 10
        del x, view
        assert tracker.live == 4000
        del y
    assert tracker.live == 0 and tracker.peak == 8000


def test_missing_tokenizer_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment, "importable", lambda m: m != "sentencepiece")
    problem = environment.tokenizer_problem({"kind": "hf", "name": "deberta-v3-base"})
    assert "sentencepiece" in problem and "pip install sentencepiece" in problem
    assert environment.tokenizer_problem({"kind": "hf", "name": "roberta-base"}) is None


def test_missing_tokenizer_package_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment, "importable", lambda m: m != "tokenizers")
    spec = spec_for(["model=minilm", "task=glue/rte", *SMALL], tmp_path)
    row = Planner(Target("A100-80GB", 80)).check(["model=minilm"], spec)
    assert row.status == "FAIL" and any("tokenizers" in p for p in row.problems)
    assert cli.failing([row]) == [row]


def test_vtab_without_data_source_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tasks.config.runspec import ConfigError

    with pytest.raises(ConfigError, match="data.path"):  # the run's own validation names it
        spec_for(["task=vtab/cifar", "data=hub", "peft=capaboost_lora"], tmp_path)
    assert cli.main(["vtab", "--gpu-mem", "80"]) == 2   # so the sweep stops at its first run, one line
    assert "data.path is not set" in capsys.readouterr().err
    planner = Planner(Target("A100-80GB", 80))
    ok = planner.check(["data=fixture"], spec_for(["task=vtab/cifar", "peft=capaboost_lora"], tmp_path))
    assert ok.status == "ok" and ok.counts["total"] > 0


def test_local_data_path_without_the_expected_files_fails(tmp_path: Path) -> None:
    empty = tmp_path / "glue"
    empty.mkdir()
    spec = spec_for(["task=glue/rte", f"data.path={empty}", *SMALL], tmp_path)
    row = Planner(Target("A100-80GB", 80)).check(["local"], spec)
    assert row.status == "FAIL" and "neither a save_to_disk DatasetDict nor GLUE TSVs" in row.problems[0]


def test_batch_that_cannot_fit_gets_grad_accum(tmp_path: Path) -> None:
    spec = spec_for(["task=glue/rte", "trainer.batch_size=64", "trainer.max_seq_length=64"], tmp_path)
    roomy = Planner(Target("A100-80GB", 80)).check(["roomy"], spec)
    overhead = 1.0
    assert roomy.status == "ok" and roomy.fits and roomy.need_gib > overhead
    tight = overhead + (roomy.need_gib - overhead) * 0.7   # activations of a half batch fit, a full one not
    row = Planner(Target("A100-80GB", tight)).check(["tight"], spec)
    assert row.fits is False and row.fix == "trainer.grad_accum=2" and row.fix_gib <= tight < row.need_gib
    assert row.status == "ok" and cli.failing([row]) == [row]     # it can start, but not on this card
    none = Planner(Target("A100-80GB", overhead / 2)).check(["hopeless"], spec)
    assert none.status == "NO-FIT" and none.fix is None


def test_steps_and_eval_examples_by_hand(tmp_path: Path) -> None:
    from preflight import cost

    sst2 = spec_for(["task=glue/sst2", "data.train_limit=null", "data.eval_limit=null", "trainer.epochs=2",
                     "task.protocol=split"], tmp_path)
    assert cost.train_examples(sst2) == 67349 - 1000                  # 1,000 held out for selection
    assert cost.schedule(sst2, 8, 1) == (2 * -(-66349 // 8), 2)
    assert cost.eval_examples(sst2) == 1000 + 872                     # held-out select + dev report
    rte = spec_for(["task=glue/rte", "data.eval_limit=null", "task.protocol=dev"], tmp_path)
    assert cost.eval_examples(rte) == 277                             # select is report: scored once
    cifar = spec_for(["task=vtab/cifar", "task.protocol=final", "data.eval_limit=null"], tmp_path)
    assert cost.train_examples(cifar) == 1000 and cost.eval_examples(cifar) == 10000
    # VTAB scores test after the last epoch only (task.eval_every=null), or every N epochs and the last
    vtab = ["task=vtab/cifar", "trainer.epochs=100", "trainer.batch_size=64"]
    assert cost.schedule(spec_for(vtab, tmp_path), 64, 1) == (100 * 16, 1)      # 1,000 / 64 -> 16 steps
    assert cost.schedule(spec_for([*vtab, "task.eval_every=30"], tmp_path), 64, 1) == (1600, 4)  # 30..90, 100


def test_wall_time_longest_first_against_every_schedule() -> None:
    """Oracle: the best makespan over every assignment of runs to GPUs (brute force); LPT lies between
    the floors (longest run, GPU-hours / GPUs) and 4/3 of that best, and matches a hand-made schedule."""
    import itertools
    import random

    from preflight import cost, report

    assert cost.wall_hours([5, 4, 3, 3, 3], 2) == 10   # by hand: 5 | 4, 3 -> 7 | 3 -> 8 | 3 -> 10 (best: 9)
    assert cost.wall_hours([7, 1, 1, 1], 8) == 7       # more GPUs than runs: the longest run is the floor
    rng = random.Random(0)
    for _ in range(40):
        hours, gpus = [rng.uniform(0.1, 5) for _ in range(rng.randint(1, 7))], rng.randint(1, 3)
        best = min(max(sum(h for h, g in zip(hours, pick, strict=True) if g == gpu) for gpu in range(gpus))
                   for pick in itertools.product(range(gpus), repeat=len(hours)))
        wall = cost.wall_hours(hours, gpus)
        assert max(max(hours), sum(hours) / gpus) - 1e-9 <= best <= wall + 1e-9
        assert wall <= (4 / 3 - 1 / (3 * gpus)) * best + 1e-9
    rows = [RunCheck(["seed=1"], gpu_hours=2.0), RunCheck(["seed=2"], gpu_hours=1.0),
            RunCheck(["seed=3"], gpu_hours=1.0), RunCheck(["seed=4"], status="FAIL")]
    line = report.wall_time(rows, 2)
    assert line.startswith("wall time on 2 GPUs: 2.0 h (3 runs") and "4.0 GPU-hours / 2 = 2.0 h" in line


def test_cli_bad_input_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["squad", "--gpu-mem", "24", "--gpu", "B300"]) == 2
    assert "GPU='B300'" in capsys.readouterr().err
    assert cli.main(["nosuchsweep", "--gpu-mem", "24"]) == 2
    assert "no sweep 'nosuchsweep'" in capsys.readouterr().err
    assert cli.main(["squad", "--gpu-mem", "24", "--gpus", "0"]) == 2
    assert "GPUS=0 must be >= 1" in capsys.readouterr().err


def _hydra_cfg(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from tasks import CONF
    from tasks.config.runspec import register

    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)


def _callback(cfg, **kw):
    from hydra.utils import instantiate

    node = {**cfg.hydra.callbacks.preflight, **kw}
    return instantiate(node)


def test_slurm_sweep_runs_the_preflight_and_the_skip_works(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_check(name, extra, target):
        compose([f"sweep={name}"])  # the real check composes: it must work inside a running Hydra app
        calls.append((name, extra, target))
        return [RunCheck(["seed=42"], status="FAIL", problems=["no data source: set data.path=..."])]

    monkeypatch.setattr(cli, "check_sweep", fake_check)
    cfg = _hydra_cfg("sweep=vtab", "hydra/launcher=slurm")
    cfg.hydra.overrides.task = ["sweep=vtab", "seed=42"]  # what Hydra records from the command line
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tasks import CONF

    with initialize_config_dir(str(CONF), version_base="1.3"):   # as during `run.py -m`
        running = GlobalHydra.instance().hydra
        with pytest.raises(PreflightFailed, match="data.path.*skip=true") as info:
            _callback(cfg).on_multirun_start(cfg)
        assert GlobalHydra.instance().hydra is running
    # Hydra turns a callback's Exception into a warning: only a SystemExit stops the launch
    assert isinstance(info.value, SystemExit) and not isinstance(info.value, Exception)
    assert calls[0][:2] == ("vtab", ["seed=42"]) and calls[0][2].gpu_mem == 80
    _callback(cfg, skip=True).on_multirun_start(cfg)     # skipped: nothing checked, nothing raised
    assert len(calls) == 1
    local = _hydra_cfg("sweep=vtab", "hydra/launcher=submitit_local")
    local.hydra.overrides.task = ["sweep=vtab"]
    _callback(local).on_multirun_start(local)              # local launches are not checked
    assert len(calls) == 1
    assert isinstance(_callback(cfg), Preflight)
    assert compose(["sweep=vtab"]) is not None               # the callback config composes with the schema


def test_several_sweeps_count_shared_runs_once_and_name_runs_that_cannot_start(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """As NAME=paper: Fig. 1 (LoRA, d=2, d=4) and Fig. 4 (LoRA, d=2, 3, 4) at r=8 on CoLA, seed 42 share
    3 runs (by hand: 3 + 4 listed, 4 distinct); VTAB without data.path cannot compose: its 2 runs are
    named and counted, and the check goes on."""
    from tasks.config import sweeps

    monkeypatch.setitem(sweeps.SWEEP_SETS, "trio", ("fig1_rank_params", "fig4_r_by_d", "vtab"))
    code = cli.main(["trio", "--gpu-mem", "80", "seed=42", "+sweep/rank=r8",
                     "fig1_rank_params:task=glue/cola", "fig4_r_by_d:task=glue/cola", "vtab:task=vtab/dtd"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "sweep fig1_rank_params: 3 runs" in out and "sweep fig4_r_by_d: 4 runs" in out
    assert "sweep vtab: 2 runs on A100-80GB with 80 GiB: 0 ok, 2 cannot start" in out
    assert ("sweep trio (3 sweeps, 9 listed runs, 3 listed by more than one sweep, counted once): 6 runs on "
            "A100-80GB with 80 GiB: 4 ok, 2 cannot start") in out
    named = [line for line in err.splitlines() if line.startswith("FAIL: ")]
    assert len(named) == 2
    assert all("task=vtab/dtd" in line and "data.path is not set" in line for line in named)
