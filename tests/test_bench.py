"""make bench: the quick run yields every row with sane numbers; the official-style comparison point
trains exactly like CapaBoost (so the timing compares two ways of computing the same thing)."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from transformers import RobertaConfig, RobertaForSequenceClassification

import capaboost
from benchmarks import bench, official
from benchmarks import rows as R


@pytest.mark.slow
def test_quick_run_produces_every_row(tmp_path):
    result = bench.main(["--quick", "--out", str(tmp_path)])
    names = [r["name"] for r in result["rows"]]
    assert names == [s.name for s in R.default_rows()]
    for r in result["rows"]:
        assert len(r["step_s"]) == 3
        for key in ("step_ms_median", "step_ms_q25", "step_ms_q75", "ratio_to_reference",
                    "ratio_to_reference_paired"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["name"], key, r[key])
        assert r["peak_mem_bytes"] is not None and r["peak_mem_bytes"] >= 0
        if r["spec"]["kind"].endswith("-infer"):
            assert r["optimizer_state_bytes"] == 0
        else:
            assert r["peak_mem_bytes"] > 0 and r["optimizer_state_bytes"] > 0
            assert 0 < r["effective_params"] <= r["trainable_params"] < r["total_params"]
            if r["group"] == "lora":
                assert math.isfinite(r["overhead_ms_vs_floor"])
    saved = json.loads((tmp_path / "quick-cpu-2L.json").read_text())
    assert [r["name"] for r in saved["rows"]] == names and saved["torch_threads"] == 1


def _tiny() -> RobertaForSequenceClassification:
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=40, type_vocab_size=1, num_labels=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # same draws in both runs
    return RobertaForSequenceClassification(cfg)


def _train(model, batch, steps, official_hooks):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        if official_hooks:
            official.after_backward(model)
        opt.step()
        if official_hooks:
            official.after_step(model)
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, opt


@pytest.mark.parametrize("method", ["lora", "padapter"])
def test_official_copies_train_like_capaboost(method):
    """The d-copies scheme (mask grads, sum, write back, d optimizer states, re-mask) must give
    the same losses and weights as one shared weight under autograd: the paper's claim."""
    model = capaboost.apply(_tiny(), capaboost.CapaBoostConfig(method=method, d=3, density=0.5, r=4, seed=5))
    twin = official.to_official(copy.deepcopy(model))
    gen = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(3, 50, (4, 12), generator=gen),
             "labels": torch.randint(0, 2, (4,), generator=gen)}
    ours, opt = _train(model, batch, 5, False)
    theirs, twin_opt = _train(twin, batch, 5, True)
    assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-6)
    assert ours[-1] != pytest.approx(ours[0], abs=1e-4)  # it did train
    for name, mod in capaboost.peft_modules(model).items():
        twin_mod = twin.get_submodule(name)
        masked_groups = [g for g in twin_mod.groups() if g[2] is not None]
        for (w, mask), (copies, dense, _) in zip(mod.masked_parameters(), masked_groups, strict=True):
            # atol: Adam turns fp32 summation-order noise in tiny gradients into ~lr-sized steps
            torch.testing.assert_close(dense, w.detach(), rtol=1e-4, atol=5e-5)
            for c, m in zip(copies, mask, strict=True):
                torch.testing.assert_close(c.detach(), (w * m).detach(), rtol=1e-4, atol=5e-5)
    # AdamW keeps exp_avg + exp_avg_sq (fp32) and a float32 step per parameter: CapaBoost holds one
    # copy's state, the official scheme one per copy of every PEFT tensor (d = 3 here).
    state = sum(8 * p.numel() + 4 for p in model.parameters() if p.requires_grad)
    peft_state = sum(8 * p.numel() + 4 for mod in capaboost.peft_modules(model).values()
                     for p in mod.parameters() if p.requires_grad)
    assert R.optimizer_state_bytes(opt) == state
    assert R.optimizer_state_bytes(twin_opt) == state + 2 * peft_state
    assert official.count_parameters(twin)["effective"] == capaboost.count_parameters(model)["effective"]


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--device", "tpu"], ["--rows", "no-such-row"],
                                  ["--mem-steps", "0"]])
def test_bad_arguments_fail_before_work(argv):
    with pytest.raises(SystemExit):
        bench.run(bench.parse_args(["--quick", "--no-memory", *argv]))


@pytest.mark.slow
def test_tables_bench_builds_every_output(tmp_path):
    """benchmarks/tables_bench.py: the synthetic paper grid gives the main tables, one table per other
    sweep and all three figures (its timing is printed, not asserted)."""
    from benchmarks import tables_bench

    stats = tables_bench.main(["--n", "700", "--keep", str(tmp_path)])
    assert stats["files"] == 700 and stats["figures"] == 3
    names = sorted(p.name for p in (tmp_path / "out" / "tables").glob("*.md"))
    # paired verdicts beside every table with a CapaBoost and a vanilla LoRA row (Fig. 3 has no LoRA row)
    assert names == [f"glue_roberta_base{s}.md" for s in (
        "-fig1_rank_params-paired", "-fig1_rank_params", "-fig3_masks", "-fig4_r_by_d-paired", "-fig4_r_by_d",
        "-paired", "")]


def test_unloaded_row_is_the_plain_backbone():
    """The merge_and_unload row runs the backbone's own modules (nothing of capaboost left) and gives
    the merged row's outputs."""
    shape = R.Shape.tiny()
    template = R.build_template(shape, "cpu")
    batch = R.make_batch(shape, "cpu")
    specs = {s.kind: s for s in R.default_rows() if s.group == "inference"}
    merged, unloaded = (R.build_row(specs[k], template, batch).model
                        for k in ("merged-infer", "unloaded-infer"))
    assert not capaboost.peft_modules(unloaded) and capaboost.peft_modules(merged)
    assert [type(m) for m in unloaded.modules()] == [type(m) for m in template.modules()]
    with torch.no_grad():
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
        torch.testing.assert_close(unloaded(**inputs).logits, merged(**inputs).logits, atol=1e-5, rtol=0)
        assert (unloaded(**inputs).logits - template(**inputs).logits).abs().max() > 1e-6
