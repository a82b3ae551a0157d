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
from tasks import distributed as D

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
    from tasks import distributed as D
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
