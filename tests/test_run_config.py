"""The config tree: every option composes, recipes are the paper's numbers, validation names the key."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from runs import CONF, ROOT, compose, spec_for

from tasks.config.runspec import ConfigError, resolve


def options(group: str) -> list[str]:
    """What Hydra offers for ``group``: its files and the task options made from the facts."""
    from tasks.config.runspec import register
    from tasks.config.task_options import options as group_options

    register()
    return group_options(group, CONF)


def test_groups_offer_the_contract_options():
    assert set(options("model")) >= {"roberta-base", "roberta-large", "deberta-v3-base", "vit-b16", "tiny",
                                      "tiny-vit", "minilm"}
    assert options("peft") == sorted(["lora", "padapter", "prefix", "capaboost_lora", "capaboost_padapter",
                                      "capaboost_prefix", "dora", "rslora", "pissa", "vera", "loha",
                                      "adalora"])
    assert set(options("logger")) == {"wandb", "wandb_online", "none"}
    assert set(options("data")) == {"hub", "fixture"}


def test_task_options_match_the_data_schema():
    from tasks.facts.glue import GLUE
    from tasks.facts.vtab import VTAB

    tasks = options("task")
    assert {t for t in tasks if t.startswith("glue/")} == {f"glue/{t}" for t in GLUE}
    assert {t for t in tasks if t.startswith("vtab/")} == {f"vtab/{t}" for t in VTAB}
    assert {t for t in tasks if t.startswith("squad/")} == {"squad/v1", "squad/v2"}
    assert len(VTAB) == 19


def test_every_model_composes_with_its_modality(tmp_path):
    for model in ("roberta-base", "roberta-large", "deberta-v3-base", "minilm", "tiny"):
        spec = spec_for([f"model={model}", "task=glue/mnli", "peft=capaboost_padapter"], tmp_path, tiny=False)
        assert spec.modality == "text" and spec.method == "padapter"
    for model in ("vit-b16", "tiny", "tiny-vit"):
        spec = spec_for([f"model={model}", "task=vtab/dtd", "peft=capaboost_lora", "data=fixture"], tmp_path,
                        tiny=False)
        assert spec.modality == "image" and spec.backbone == "timm-vit"


def test_every_task_composes(tmp_path):
    for task in options("task"):
        model, data = {"vtab": ("vit-b16", "fixture"), "math": ("llama-3.2-3b", "hub")}.get(
            task.split("/")[0], ("roberta-base", "hub"))
        spec = spec_for([f"model={model}", f"task={task}", f"data={data}"], tmp_path, tiny=False)
        assert spec.task == task and spec.family == task.split("/")[0]
        assert spec.protocol == {"glue": "split", "squad": "dev", "vtab": "final",
                                 "math": "peft_metamathqa"}[spec.family]


def test_roberta_base_recipe_is_the_papers(tmp_path):
    """docs/paper.md, Recipes: LoRA CoLA lr 5e-4, 40 epochs, SST-2 1e-4, 20 epochs; batch 128, max_seq 128,
    warmup ratio 0.1, wd 0.1; r 32, alpha 48 (the runs the authors' reader aggregates); adapter reduction
    factor 12; the authors' LoRA init and clipping norm."""
    cola = spec_for(["model=roberta-base", "task=glue/cola", "peft=capaboost_lora"], tmp_path, tiny=False)
    assert {k: cola.hparams[k] for k in ("lr", "epochs", "batch_size", "max_seq_length", "warmup_ratio",
                                          "weight_decay", "r", "alpha")} == {
        "lr": 5e-4, "epochs": 40, "batch_size": 128, "max_seq_length": 128, "warmup_ratio": 0.1,
        "weight_decay": 0.1, "r": 32, "alpha": 48}
    assert (cola.capaboost_config["init"], cola.config["trainer"]["clip"]) == ("official", "official")
    sst2 = spec_for(["model=roberta-base", "task=glue/sst2", "peft=lora"], tmp_path, tiny=False)
    assert (sst2.hparams["lr"], sst2.hparams["epochs"]) == (1e-4, 20)
    rte = spec_for(["model=roberta-base", "task=glue/rte", "peft=capaboost_padapter"], tmp_path, tiny=False)
    assert (rte.hparams["reduction_factor"], rte.hparams["epochs"]) == (12, 20)
    assert rte.capaboost_config["reduction_factor"] == 12


def test_deberta_recipe_and_protocol(tmp_path):
    """DeBERTa-v3-base: LoRA dev protocol, adapter split (the authors' scripts by method); RTE lr 1.5e-3 for
    60 epochs, warmup 200 steps; QNLI alpha 32; SQuAD LoRA r 1, alpha 16, lr 1e-3, 15 epochs, max_seq 384,
    stride 128, final epoch reported."""
    rte = spec_for(["model=deberta-v3-base", "task=glue/rte", "peft=capaboost_lora"], tmp_path, tiny=False)
    assert rte.protocol == "dev"
    for peft in ("padapter", "capaboost_padapter"):
        assert spec_for(["model=deberta-v3-base", "task=glue/rte", f"peft={peft}"], tmp_path,
                        tiny=False).protocol == "split"
    wins = ["model=deberta-v3-base", "task=glue/rte", "peft=padapter", "task.protocol=dev"]
    assert spec_for(wins, tmp_path, tiny=False).protocol == "dev"  # the command line still wins
    assert (rte.hparams["lr"], rte.hparams["epochs"], rte.hparams["warmup_steps"]) == (1.5e-3, 60, 200)
    qnli = spec_for(["model=deberta-v3-base", "task=glue/qnli", "peft=lora"], tmp_path, tiny=False)
    assert (qnli.hparams["alpha"], qnli.hparams["max_seq_length"], qnli.hparams["batch_size"]) \
        == (32, 320, 64)
    squad = spec_for(["model=deberta-v3-base", "task=squad/v1", "peft=capaboost_lora"], tmp_path, tiny=False)
    assert {k: squad.hparams[k] for k in ("r", "alpha", "lr", "epochs", "max_seq_length", "doc_stride")} == {
        "r": 1, "alpha": 16, "lr": 1e-3, "epochs": 15, "max_seq_length": 384, "doc_stride": 128}
    assert squad.config["task"]["report"] == "final_epoch"
    assert spec_for(["model=roberta-base", "task=glue/rte"], tmp_path, tiny=False).protocol == "split"


def test_pairs_without_a_recipe_file_take_the_schemas_fallback(tmp_path):
    """MiniLM on GLUE has no recipe file: the schema's MethodRecipe defaults apply (the values
    conf/config.yaml held before they moved there), the prefix with its own lr and length."""
    lora = spec_for(["model=minilm", "task=glue/cola", "peft=capaboost_lora"], tmp_path, tiny=False)
    assert {k: lora.hparams[k] for k in ("lr", "epochs", "batch_size", "max_seq_length", "warmup_ratio",
                                          "warmup_steps", "weight_decay", "r", "alpha")} == {
        "lr": 5e-4, "epochs": 20, "batch_size": 32, "max_seq_length": 128, "warmup_ratio": 0.1,
        "warmup_steps": 0, "weight_decay": 0.1, "r": 8, "alpha": 16}
    prefix = spec_for(["model=minilm", "task=glue/cola", "peft=capaboost_prefix"], tmp_path, tiny=False)
    assert (prefix.hparams["lr"], prefix.hparams["prefix_length"], prefix.hparams["weight_decay"]) \
        == (1e-4, 64, 0.1)


def test_tiny_text_models_record_their_vocabulary(tmp_path):
    """One address for the tiny vocabulary (tasks/config/schema.py, TINY_VOCAB), recorded in the resolved
    config as the model files once spelt it (2000), so run identities stand; image-only models have none."""
    for model in ("tiny", "tiny-gpt2", "tiny-llama"):
        assert spec_for([f"model={model}"], tmp_path).config["model"]["vocab_size"] == 2000, model
    assert spec_for(["model=tiny", "model.vocab_size=500"], tmp_path).config["model"]["vocab_size"] == 500
    vit = spec_for(["model=tiny-vit", "task=vtab/dtd"], tmp_path)
    assert vit.config["model"]["vocab_size"] is None


def test_command_line_overrides_win_over_the_recipe(tmp_path):
    spec = spec_for(["model=roberta-base", "task=glue/cola", "trainer.lr=1e-3", "peft.r=32", "peft.alpha=48",
                     "task.protocol=dev"], tmp_path, tiny=False)
    assert (spec.hparams["lr"], spec.capaboost_config["r"], spec.capaboost_config["alpha"], spec.protocol) \
        == (1e-3, 32, 48, "dev")


def test_vanilla_peft_ignores_top_level_d_and_density(tmp_path):
    for peft in ("lora", "padapter", "prefix"):
        spec = spec_for([f"peft={peft}", "d=4", "density=0.3"], tmp_path)
        assert (spec.d, spec.density, spec.capaboost) == (1, 1.0, False)
        assert (spec.capaboost_config["d"], spec.capaboost_config["density"]) == (1, 1.0)
    boosted = spec_for(["peft=capaboost_prefix", "d=4", "density=0.3", "mask_seed=7", "seed=3"], tmp_path)
    assert (boosted.d, boosted.density, boosted.capaboost_config["mask_seed"], boosted.seed) == (4, 0.3, 7, 3)


def test_run_dir_is_derived_from_the_config_only(tmp_path):
    base = ["task=glue/cola", "peft=capaboost_lora"]
    a = spec_for(base, tmp_path)
    assert a.run_dir == spec_for(base, tmp_path).run_dir
    assert a.run_dir == spec_for([*base, "logger=wandb", "force=true"], tmp_path).run_dir
    # where it trains is not what it is: a requeue on another node (or trainer.device=cuda) finds its dir
    assert a.run_dir == spec_for([*base, "trainer.device=cuda"], tmp_path).run_dir
    assert Path(a.run_dir).relative_to(tmp_path).parts[:4] == ("glue", "cola", "tiny", "capaboost_lora")
    other_seed = spec_for([*base, "seed=43"], tmp_path)
    assert other_seed.run_dir != a.run_dir and other_seed.group == a.group
    assert "modules_to_save" not in a.capaboost_config  # unset: the identities of earlier runs stand
    for change in ("density=0.25", "mask_seed=1", "trainer.lr=0.01", "d=3", "mask=same",
                   "peft.modules_to_save=[classifier,roberta.pooler]"):
        changed = spec_for([*base, change], tmp_path)
        assert changed.run_dir != a.run_dir and changed.group != a.group, change


def test_result_config_records_the_data_source(tmp_path):
    assert spec_for([], tmp_path).config["data"]["source"] == "fixture"
    spec = spec_for([f"data.path={tmp_path}"], tmp_path)
    assert spec.config["data"]["source"] == "path" and spec.config["data"]["path"] == str(tmp_path)


@pytest.mark.parametrize("overrides, key", [
    (["d=0"], "d"), (["density=1.5"], "density"), (["density=0"], "density"), (["mask=zigzag"], "mask"),
    (["peft=prefix", "model=deberta-v3-base"], "prefix"),
    (["peft=capaboost_prefix", "task=vtab/cifar"], "prefix"),
    (["model=vit-b16"], "model"), (["model=tiny-vit"], "model"), (["data.path=/no/such/dir"], "data.path"),
    (["model.path=/no/such/ckpt"], "model.path"), (["task.protocol=tune"], "task.protocol"),
    (["trainer.precision=fp8"], "trainer.precision"), (["trainer.batch_size=6", "trainer.grad_accum=4"],
                                                       "grad_accum"),
    (["mask=nm", "density=0.3"], "density"), (["logger.mode=later"], "logger.mode"),
    (["task=vtab/cifar", "data=hub"], "data.path"),
    (["trainer.device=gpu"], "trainer.device"), (["trainer.use_cpu=true", "trainer.device=cuda"], "use_cpu"),
])
def test_bad_values_raise_naming_the_key(overrides, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        spec_for(overrides, tmp_path)


def test_vtab_data_path_must_hold_the_protocols_lists(tmp_path):
    """The NOAH/VPT VTAB-1k layout: <root>/<name>/{train800,val200,train800val200,test}.txt."""
    folder = tmp_path / "vtab-1k" / "dtd"
    folder.mkdir(parents=True)
    (folder / "train800val200.txt").write_text("images/0.jpg 0\n")
    vtab = ["task=vtab/dtd", "model=tiny", f"data.path={tmp_path / 'vtab-1k'}"]
    with pytest.raises(ConfigError, match=r"data.path=.*test.txt"):  # final needs test.txt too
        spec_for(vtab, tmp_path)
    (folder / "test.txt").write_text("images/1.jpg 0\n")
    assert spec_for(vtab, tmp_path).config["data"]["source"] == "path"
    assert spec_for([*vtab[:2], f"data.path={folder}"], tmp_path).task == "vtab/dtd"  # the folder itself
    with pytest.raises(ConfigError, match="train800.txt val200.txt"):
        spec_for([*vtab, "task.protocol=tune"], tmp_path)
    hub = spec_for(["task=vtab/dtd", "model=tiny", "data=hub", "data.hub_id='org/vtab-{name}'"], tmp_path)
    assert hub.config["data"]["hub_id"] == "org/vtab-{name}"


@pytest.mark.parametrize("override, key", [("foo=1", "foo"), ("trainer.lrr=1", "lrr"), ("d=abc", "d"),
                                           ("seed=1.5", "seed"), ("task=glue/colaa", "colaa")])
def test_wrong_keys_and_types_fail_at_compose_time(override, key):
    with pytest.raises(Exception, match=key):
        compose(["model=tiny", override])


def test_sweep_option_selects_sweeps_yaml():
    files = sorted((ROOT / "sweeps").glob("*.yaml"))
    if not files:
        pytest.skip("no sweep files yet")
    for path in files:
        declared = yaml.safe_load(path.read_text()) or {}
        params = declared.get("hydra", {}).get("sweeper", {}).get("params")
        if not params:
            continue
        cfg = compose_with_hydra([f"sweep={path.stem}"])
        assert dict(cfg.hydra.sweeper.params) == {k: str(v) for k, v in params.items()}, path.name
        return
    pytest.skip("no sweep file with sweeper params")


def compose_with_hydra(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from tasks.config.runspec import register

    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=overrides, return_hydra_config=True)


def test_resolve_leaves_hydra_out_of_the_recorded_config(tmp_path):
    cfg = compose_with_hydra(["model=tiny", "data=fixture", f"runs_root={tmp_path}"])
    assert "hydra" not in resolve(cfg).config


def test_identity_ignores_how_a_run_executes(tmp_path):
    """tasks/config/identity.py: settings that cannot change the numbers share the run dir and the table
    cell."""
    base = spec_for(["task=glue/cola", "peft=capaboost_lora"], tmp_path)
    for change in ("trainer.eval_batch_size=4", "trainer.grad_accum=2", "trainer.num_workers=1",
                   "trainer.use_cpu=true", "trainer.progress=true", "trainer.save_total_limit=3",
                   "trainer.logging_steps=7", f"runs_root={tmp_path}"):
        same = spec_for(["task=glue/cola", "peft=capaboost_lora", change], tmp_path)
        key = (same.run_dir, same.group, same.identity_key)
        assert key == (base.run_dir, base.group, base.identity_key), change
    for change in ("trainer.lr=0.01", "data.train_limit=10", "peft.dropout=0.1", "trainer.max_grad_norm=0.5"):
        other = spec_for(["task=glue/cola", "peft=capaboost_lora", change], tmp_path)
        assert other.identity_key != base.identity_key and other.run_dir != base.run_dir, change
    assert base.identity["capaboost"]["d"] == 2 and "seed" not in base.identity
    assert base.identity["hparams"]["lr"] == base.hparams["lr"]


def test_resolve_records_the_sweep_outside_the_identity(tmp_path):
    cfg = compose(["model=tiny", "data=fixture", f"runs_root={tmp_path}"])
    plain, swept = resolve(cfg), resolve(cfg, sweep="fig3_masks")
    assert (plain.sweep, swept.sweep) == (None, "fig3_masks")
    assert (plain.run_dir, plain.identity_key) == (swept.run_dir, swept.identity_key)


def test_roberta_large_takes_roberta_base_recipe(tmp_path):
    """The paper has no RoBERTa-large runs: its recipe is RoBERTa-base's, stated as assumed."""
    for task in ("glue/rte", "glue/sst2"):
        large = spec_for(["model=roberta-large", f"task={task}", "peft=capaboost_lora"], tmp_path, tiny=False)
        base = spec_for(["model=roberta-base", f"task={task}", "peft=capaboost_lora"], tmp_path, tiny=False)
        assert large.hparams == base.hparams and large.model == "roberta-large"
    rte = spec_for(["model=roberta-large", "task=glue/rte", "peft=capaboost_lora"], tmp_path, tiny=False)
    assert (rte.hparams["lr"], rte.hparams["epochs"], rte.hparams["batch_size"]) == (5e-4, 30, 128)


def test_deberta_qnli_warmup_is_the_official_scripts(tmp_path):
    spec = spec_for(["model=deberta-v3-base", "task=glue/qnli", "peft=capaboost_lora"], tmp_path, tiny=False)
    assert spec.hparams["warmup_steps"] == 500 and spec.hparams["max_seq_length"] == 320


@pytest.mark.parametrize("overrides, key", [
    (["peft.alpha=0"], "peft.alpha"), (["peft=capaboost_padapter", "peft.dropout=0.1"], "peft.dropout"),
    (["mask=none"], "mask"), (["mask=nm", "peft.r=2"], "mask"), (["mask_seed=-1"], "mask_seed"),
])
def test_the_methods_own_rules_reject_a_config_before_torch(overrides, key, tmp_path):
    """resolve builds capaboost's CapaBoostConfig: its construction checks name the config key."""
    with pytest.raises(ConfigError, match=key):
        spec_for(overrides, tmp_path)


def test_backbone_support_is_capaboosts_table(tmp_path, monkeypatch):
    """No copy of the table in tasks/: taking a method off capaboost's backbone entry rejects it."""
    import dataclasses

    from capaboost.backbones import BACKBONES

    spec_for(["peft=capaboost_padapter"], tmp_path)
    monkeypatch.setitem(BACKBONES, "roberta", dataclasses.replace(BACKBONES["roberta"], methods=("lora",)))
    with pytest.raises(ConfigError, match="not supported"):
        spec_for(["peft=capaboost_padapter"], tmp_path)
