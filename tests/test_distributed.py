"""DDP runs: env mapping (no SLURM needed), mask agreement across ranks, CapaBoost under real
gloo DDP against a one-process oracle, and the CLI under torchrun / submitit_local."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import capaboost
from tasks.cluster import distributed as D

ROOT = Path(__file__).resolve().parents[1]
TORCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ---------------------------------------------------------------- env mapping (pure functions)

def test_torch_env_one_node_two_tasks():
    envs = [D.torch_env("4242", r, r, 2, 1, ["gpu7"]) for r in range(2)]
    port = envs[0]["MASTER_PORT"]
    assert envs[1] == {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    assert envs[0]["RANK"] == "0" and envs[0]["MASTER_PORT"] == port
    assert 20000 <= int(port) < 60000


def test_torch_env_two_nodes_rendezvous_on_first_host():
    # 2 nodes x 4 tasks: global rank 5 is local rank 1 of the second node
    env = D.torch_env("77_3", 5, 1, 8, 2, ["node3", "node4"])
    got = (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"])
    assert got == ("5", "1", "8", "4")
    assert env["MASTER_ADDR"] == "node3"
    # every task of the job agrees on the port; another array task (same node maybe) gets its own
    ports = {D.torch_env("77_3", r, r % 4, 8, 2, ["node3", "node4"])["MASTER_PORT"] for r in range(8)}
    assert ports == {env["MASTER_PORT"]}
    assert D.master_port("77_3") != D.master_port("77_4")


@pytest.mark.parametrize("args, field", [
    (("1", 0, 0, 3, 2, ["a", "b"]), "split evenly"),
    (("1", 2, 0, 2, 1, ["a"]), "out of range"),
    (("1", 1, 2, 4, 2, ["a", "b"]), "out of range"),
    (("1", 0, 0, 4, 2, []), "node list"),
    (("1", -1, 0, 2, 1, ["a"]), "global_rank"),
])
def test_torch_env_rejects_bad_jobs(args, field):
    with pytest.raises(ValueError, match=field):
        D.torch_env(*args)


def _clear_dist_env(monkeypatch):
    for key in list(os.environ):
        if key in TORCH_VARS or key.startswith(("SLURM_", "SUBMITIT_")):
            monkeypatch.delenv(key)


def test_export_from_a_real_submitit_slurm_environment(monkeypatch):
    """submitit's own SlurmJobEnvironment parses the SLURM variables (node list included)."""
    import submitit

    _clear_dist_env(monkeypatch)
    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "901", "SLURM_ARRAY_JOB_ID": "900",
                       "SLURM_ARRAY_TASK_ID": "1", "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "2",
                       "SLURM_NODEID": "1", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
                       "SLURM_JOB_NODELIST": "gpu[12-13]"}.items():
        monkeypatch.setenv(key, value)
    environ = dict(os.environ)
    info = D.export(environ)
    assert info == D.DistInfo(rank=3, local_rank=1, world_size=4, launcher="submitit")
    assert {k: environ[k] for k in TORCH_VARS} == {
        "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "gpu12",
        "MASTER_PORT": str(D.master_port("900_1"))}
    assert submitit.JobEnvironment().job_id == "900_1"


def test_export_single_task_job_stays_a_plain_run(monkeypatch):
    _clear_dist_env(monkeypatch)
    for key, value in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "5",
                       "SUBMITIT_LOCAL_NTASKS": "1", "SUBMITIT_LOCAL_GLOBALID": "0",
                       "SUBMITIT_LOCAL_LOCALID": "0"}.items():
        monkeypatch.setenv(key, value)
    environ = dict(os.environ)
    assert D.export(environ) == D.DistInfo()
    assert not set(TORCH_VARS) & set(environ)


def test_export_keeps_variables_a_launcher_already_set():
    environ = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1234",
               "SUBMITIT_EXECUTOR": "slurm"}
    before = dict(environ)
    assert D.export(environ) == D.DistInfo(1, 1, 2, "torchrun")
    assert environ == before
    assert D.export({}) == D.DistInfo()


@pytest.mark.parametrize("environ", [
    {"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
    {"WORLD_SIZE": "2", "RANK": "0"},
    {"WORLD_SIZE": "two"},
])
def test_read_rejects_inconsistent_variables(environ):
    with pytest.raises(ValueError, match="torch.distributed|MASTER_ADDR"):
        D.read(environ)


def test_trainer_overrides_are_real_training_arguments(tmp_path):
    from transformers import TrainingArguments

    assert D.trainer_overrides(D.DistInfo()) == {}
    ddp = D.trainer_overrides(D.DistInfo(0, 0, 2, "torchrun"))
    assert ddp == {"ddp_find_unused_parameters": False, "ddp_broadcast_buffers": False}
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], **ddp)  # names exist in this version
    assert args.ddp_broadcast_buffers is False and args.ddp_find_unused_parameters is False


def test_cpu_groups_tell_accelerate():
    group = D.DistInfo(0, 0, 2, "torchrun")
    assert D.cpu_env(group, cuda=False) == {"ACCELERATE_USE_CPU": "true"}
    assert D.cpu_env(group, cuda=True) == {} == D.cpu_env(D.DistInfo(), cuda=False)


def test_per_device_batch_keeps_the_global_batch():
    assert D.per_device_batch(32, 4) == 8
    assert D.per_device_batch(32, 2, grad_accum=2) == 8
    with pytest.raises(ValueError, match="divisible by 3"):
        D.per_device_batch(32, 3)


# ---------------------------------------------------------------- mask digest

def _tiny_roberta(seed: int = 0):
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(seed)
    return RobertaForSequenceClassification(RobertaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def _reference_digest(model) -> str:
    """Written from the definition: names in order, then each mask buffer's bytes."""
    h = hashlib.sha256()
    layers = {n: m for n, m in model.named_modules() if hasattr(m, "mask_A") or hasattr(m, "mask_down")}
    for name in sorted(layers):
        h.update(name.encode())
        for buf in (("mask_A", "mask_B") if hasattr(layers[name], "mask_A") else ("mask_down", "mask_up")):
            h.update(getattr(layers[name], buf).numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("method", ["lora", "padapter"])
def test_mask_digest_matches_definition_and_tracks_masks(method):
    cfg = capaboost.CapaBoostConfig(method=method, d=2, density=0.5, seed=0)
    a = capaboost.apply(_tiny_roberta(0), cfg)
    b = capaboost.apply(_tiny_roberta(9), cfg)  # other weights and global RNG state, same masks
    other_cfg = capaboost.CapaBoostConfig(method=method, d=2, density=0.5, seed=1)
    other = capaboost.apply(_tiny_roberta(0), other_cfg)
    assert capaboost.mask_digest(a) == _reference_digest(a) == capaboost.mask_digest(b)
    assert capaboost.mask_digest(other) == _reference_digest(other) != capaboost.mask_digest(a)
    one_flip = next(m for m in capaboost.peft_modules(a).values())
    one_flip.masked_parameters()[0][1].view(-1)[0] ^= True
    assert capaboost.mask_digest(a) != capaboost.mask_digest(b)


# ---------------------------------------------------------------- two gloo processes

WORKER = textwrap.dedent("""
    import json, sys
    import torch
    sys.path.insert(0, sys.argv[1])
    torch.set_num_threads(1)
    import capaboost
    from tasks.cluster import distributed as D
    from tests.test_distributed import _tiny_roberta, global_batches

    out = sys.argv[2]
    info = D.setup(timeout_s=120)
    assert info.world_size == 2 and info.launcher == "torchrun"
    from transformers import TrainingArguments
    args = TrainingArguments(output_dir=out, report_to=[], **D.trainer_overrides(info))
    assert (args.world_size, args.process_index, args.parallel_mode.value) == (2, info.rank, "distributed")
    def build(method, seed):
        return capaboost.apply(_tiny_roberta(0), capaboost.CapaBoostConfig(method=method, d=2, density=0.5,
                                                                           seed=seed))
    result = {}
    for method in ("lora", "padapter"):
        model = build(method, 0).train()
        D.check_masks(model, info)
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False,
                                                        broadcast_buffers=False)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        for ids, labels in global_batches():
            half = slice(2 * info.rank, 2 * info.rank + 2)
            ddp(input_ids=ids[half], labels=labels[half]).loss.backward()
            opt.step(); opt.zero_grad()
        result[method] = {n: p.detach().tolist() for n, p in model.named_parameters() if p.requires_grad}
    json.dump(result, open(f"{out}/rank{info.rank}.json", "w"))
    D.check_masks(build("lora", info.rank), info)  # rank 1 draws other masks: must raise on both
    print("NO ERROR")
    D.teardown()
""")


def global_batches(steps: int = 3, n: int = 4):
    g = torch.Generator().manual_seed(11)
    return [(torch.randint(3, 100, (n, 10), generator=g), torch.randint(0, 3, (n,), generator=g))
            for _ in range(steps)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, list[subprocess.CompletedProcess]]:
    """One gloo group of two processes: DDP training of lora and padapter, then a mask mismatch."""
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(WORKER)
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if k not in TORCH_VARS and not k.startswith("SUBMITIT_")}
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), str(ROOT), str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return out, [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]


@pytest.mark.slow
def test_check_masks_fails_loudly_naming_the_ranks(two_ranks):
    for rank, done in enumerate(two_ranks[1]):
        assert done.returncode != 0, f"rank {rank} went on with other masks:\n{done.stdout}"
        assert "NO ERROR" not in done.stdout
        assert "CapaBoost mask digest" in done.stderr and "ranks [0]" in done.stderr \
            and "ranks [1]" in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
def test_ddp_capaboost_equals_one_process_on_the_global_batch(two_ranks):
    """Shared weights stay in sync across ranks and equal one process stepping on the whole batch."""
    out, done = two_ranks
    files = [out / f"rank{r}.json" for r in range(2)]
    assert all(f.exists() for f in files), done[0].stderr[-3000:] + done[1].stderr[-3000:]
    ranks = [json.loads(f.read_text()) for f in files]
    assert ranks[0] == ranks[1]  # bit-identical across ranks
    for method in ("lora", "padapter"):
        model = capaboost.apply(_tiny_roberta(0), capaboost.CapaBoostConfig(method=method, d=2, density=0.5))
        model.train()
        start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        for ids, labels in global_batches():
            model(input_ids=ids, labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()
        moved = []
        for name, p in model.named_parameters():
            if p.requires_grad:
                got = torch.tensor(ranks[0][method][name])
                torch.testing.assert_close(got, p.detach(), atol=1e-6, rtol=1e-5, msg=f"{method} {name}")
                moved.append(not torch.equal(got, start[name]))
        # lora_B starts at 0, so A's first step has no gradient; most tensors must still have trained
        assert sum(moved) >= 0.75 * len(moved), f"{method}: only {sum(moved)}/{len(moved)} tensors trained"


# ---------------------------------------------------------------- the CLI: torchrun and submitit_local

# The tiny ViT has no dropout and VTAB no augmentation, so data order is the only randomness: the
# Trainer's seeded sampler gives 1 process the same global batches of 8 that 2 ranks split 4 + 4,
# and DDP's mean of the two per-rank mean losses is the 8-example mean. 48 training images / 8 =
# 6 full steps (no ragged last batch, which DDP would pad by wrapping around).
# 13 test images do not fill 2 ranks x 4: the last round is padded with images 0-2, and the Trainer's
# gather must drop them. Accuracy on 13 images is k/13, never j/16 for 0 < k < 13: a duplicate
# counted would show. (The eval *loss* is not exact here: the Trainer repeats each rank's batch-mean
# loss, so the padded batch's mean stands in for image 12; it is left out of the comparison.)
CLI = ["task=vtab/patch_camelyon", "peft=capaboost_lora", "model=tiny", "data=fixture",
       "trainer.progress=false", "trainer.epochs=1", "data.eval_limit=13", "trainer.num_workers=0"]
TOL = 1e-5  # float32 reduction order (gloo all-reduce vs one matmul over 8); measured ~5e-7


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TORCH_VARS and not k.startswith("SUBMITIT_")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """The same tiny run three ways: torchrun x2 and submitit_local x2 tasks (started first, in the
    background), and one plain process (this one, in the meantime: one interpreter fewer to start)."""
    from runs import run

    base = tmp_path_factory.mktemp("cli")
    run_py, torchrun = str(ROOT / "run.py"), str(Path(sys.executable).with_name("torchrun"))
    commands = {
        # a two-job multirun: the second job must reuse the first one's process group
        "torchrun": [torchrun, "--nproc_per_node=2", f"--master_port={_free_port()}", run_py, "-m", *CLI,
                     "logger=wandb", "peft=capaboost_lora,lora", f"hydra.sweep.dir={base / 'tr_sweep'}"],
        "submitit": [sys.executable, run_py, "-m", *CLI, "logger=none", "hydra/launcher=submitit_local",
                     "hydra.launcher.tasks_per_node=2", f"hydra.sweep.dir={base / 'sweep'}"],
    }
    procs = {name: subprocess.Popen([*cmd, f"runs_root={base / name}"], cwd=ROOT, env=_cli_env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, cmd in commands.items()}
    try:
        run([*CLI, "logger=none"], base / "one", tiny=False)
    finally:
        out = {"one": (base / "one", subprocess.CompletedProcess(["run.py"], 0, ""))}
        for name, proc in procs.items():
            try:
                stdout, _ = proc.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout = proc.communicate()[0] + "\nTIMED OUT (a rank waiting for the others?)"
            out[name] = (base / name, subprocess.CompletedProcess(proc.args, proc.returncode, stdout))
    return out


def _only_result(root: Path, log: subprocess.CompletedProcess,
                 peft: str = "capaboost_lora") -> tuple[dict, Path]:
    assert log.returncode == 0, log.stdout[-4000:]
    results = list(root.rglob(f"{peft}/*/result.json"))
    assert len(results) == 1, results
    assert not [p for p in root.rglob("*") if ".tmp" in p.name], "a temp file was left behind"
    return json.loads(results[0].read_text()), results[0].parent


def _compare_with_one_process(runs: dict, name: str) -> dict:
    from safetensors.torch import load_file

    one, one_dir = _only_result(*runs["one"])
    ddp, ddp_dir = _only_result(*runs[name])
    assert Path(ddp_dir).name == Path(one_dir).name  # same config -> same run directory name (hash)
    assert (one["world_size"], one["per_device_batch_size"], one["grad_accum"]) == (1, 8, 1)
    assert (ddp["world_size"], ddp["per_device_batch_size"], ddp["grad_accum"]) == (2, 4, 1)
    assert ddp["global_step"] == one["global_step"] == 6
    assert ddp["mask_digest"] == one["mask_digest"]
    assert ddp["metrics"].keys() == one["metrics"].keys()
    for key in one["metrics"]:
        assert abs(ddp["metrics"][key] - one["metrics"][key]) <= TOL, key
    assert 0 < one["metrics"]["accuracy"] < 1
    w_one, w_ddp = load_file(one_dir / "peft.safetensors"), load_file(ddp_dir / "peft.safetensors")
    assert w_one.keys() == w_ddp.keys()
    for key in w_one:
        torch.testing.assert_close(w_ddp[key], w_one[key], atol=TOL, rtol=0, msg=key)
    assert any(k.endswith("lora_B") and w_one[k].abs().max() > 1e-4 for k in w_one)  # it did train
    return ddp


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(cli_runs):
    ddp = _compare_with_one_process(cli_runs, "torchrun")
    run_dir = Path(ddp["run_dir"])
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # W&B from rank 0 only
    log = cli_runs["torchrun"][1].stdout
    assert log.count("done vtab/patch_camelyon tiny capaboost_lora") == 1  # one summary line, rank 0's
    lora, _ = _only_result(*cli_runs["torchrun"], peft="lora")  # the multirun's second job
    assert (lora["world_size"], lora["d"], lora["status"]) == (2, 1, "completed")


@pytest.mark.slow
def test_submitit_local_two_tasks_form_one_ddp_group(cli_runs):
    ddp = _compare_with_one_process(cli_runs, "submitit")
    submitit_dir = cli_runs["submitit"][0].parent / "sweep" / ".submitit"
    logs = "".join(p.read_text() for p in submitit_dir.rglob("*.out"))
    assert "global_rank=1(2)" in logs and "global_rank=0(2)" in logs  # submitit started two tasks
    assert ddp["world_size"] == 2


def test_slurm_ddp_launcher_asks_one_task_per_gpu(tmp_path, monkeypatch):
    """hydra/launcher=slurm_ddp through the real plugin and submitit: the sbatch script it would submit."""
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import SlurmExecutor

    from tasks.config.runspec import register

    class Submitted(Exception):
        pass

    def fake_submit(self, command):
        raise Submitted(self._make_submission_file_text(command, "uid"))

    register()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm_ddp", "hydra.launcher.gpus_per_node=8",
                                           "hydra.launcher.nodes=2", f"hydra.sweep.dir={tmp_path}"],
                      return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_")
    launcher = SlurmLauncher(**params)
    launcher.config = cfg
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(SlurmExecutor, "_submit_command", fake_submit)
    with pytest.raises(Submitted) as sent:
        launcher.launch([["task=glue/rte"]], initial_job_idx=0)
    script = str(sent.value)
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --mem-per-gpu=64G", "#SBATCH --signal=USR2@120", "export SUBMITIT_EXECUTOR=slurm"):
        assert line in script, f"{line} not in\n{script}"
    assert "--mem=" not in script  # per-node memory would not grow with the GPUs


def test_a_cpu_run_on_a_gpu_node_forms_a_gloo_group(monkeypatch):
    """trainer.device=cpu where CUDA exists: the group and accelerate follow the run's placement."""
    import torch
    import torch.distributed as dist

    _clear_dist_env(monkeypatch)
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append(("init", backend)))
    monkeypatch.setattr(D.atexit, "register", lambda fn: None)
    D.setup(cuda=False)
    assert calls == [("init", "gloo")] and os.environ["ACCELERATE_USE_CPU"] == "true"
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    calls.clear()
    D.setup()  # no placement given: CUDA is usable, so NCCL on this rank's GPU
    assert calls == [("set_device", 0), ("init", "nccl")] and "ACCELERATE_USE_CPU" not in os.environ
