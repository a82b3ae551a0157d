"""`make gpu-check`: the checks that need a GPU, in one process, for the day one is lent (one GPU, no
network, a few minutes). Nothing is downloaded: real-size RoBERTa-base and DeBERTa-v3-base are built
with random weights from their public config values (preflight/architectures.yaml), in bf16 autocast.

1. Memory: one training step of a real sweep run (RTE, CapaBoost-LoRA d=2 and PEFT LoRA, the recipe's
   batch and sequence length) on each model: ``torch.cuda.max_memory_allocated`` against the
   preflight's traced peak for the same run (the number `make preflight` adds its slack to).
2. Step time, rows of `make bench` interleaved in one process (RoBERTa-base, batch 8 x 128): CapaBoost-LoRA
   d=2 and PEFT LoRA r=16 against PEFT LoRA r=8; merged CapaBoost inference against the base model.
3. A one-GPU NCCL group: all-reduce, and the mask digest gathered through it.
4. Masks built on the GPU have the digest of masks built on the CPU.

One table. Exit 0: all within bounds; 1: the memory estimate is off by more than 15% or CapaBoost d=2
costs more than 1.10x LoRA r=8 per step; 2: no CUDA here (one line). ``--cpu-smoke`` runs the same code
on CPU at toy sizes (no bounds), so the script is known to run before a GPU is lent.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MEMORY_TOLERANCE = 0.15   # |traced peak / max_memory_allocated - 1|
STEP_RATIO_MAX = 1.10     # CapaBoost-LoRA d=2 step / PEFT LoRA r=8 step
RUN = ["task=glue/rte", "seed=42"]   # a real sweep run: recipe batch and sequence length
SWEEPS = {"roberta-base": "glue_roberta_base", "deberta-v3-base": "glue_deberta_v3"}
SMOKE = ["trainer.batch_size=2", "trainer.max_seq_length=16"]


def no_cuda_line() -> str | None:
    """None where torch can use a GPU; else the one line, with tasks.training.device's reason (driver,
    build)."""
    from tasks.training.device import cuda_status

    ok, why = cuda_status()
    return None if ok else f"gpu-check: no CUDA device torch can use here: {why}"


def specs(smoke: bool) -> list[tuple[str, list[str], Any]]:
    """(label, overrides, RunSpec) of the runs whose step memory is checked, as the sweeps compose them."""
    from tasks.config.sweeps import compose_runs

    out = []
    for model, sweep in SWEEPS.items():
        for peft in ("capaboost_lora",) if smoke else ("capaboost_lora", "lora"):
            extra = [*RUN, f"peft={peft}", *(SMOKE if smoke else [])]
            (overrides, spec), = compose_runs(sweep, extra)
            out.append((f"{model} {peft}", overrides, spec))
    return out


def memory_rows(device: str, smoke: bool) -> list[dict[str, Any]]:
    """One real step per run on ``device`` (random init, bf16 autocast, AdamW as the Trainer's),
    against the preflight's trace of the same step."""
    import torch

    from preflight.build import batch_maker, num_outputs, text_config
    from preflight.plan import Planner, Target
    from tasks.training.models import from_config
    from tasks.training.peft import attach_peft

    rows = []
    planner = Planner(Target("H100", 80))
    for label, _, spec in specs(smoke):
        hp = spec.hparams
        micro, seq = hp["batch_size"] // hp["grad_accum"], hp["max_seq_length"]
        built = planner._build(spec, "bf16")
        trace = planner._trace(spec, built, micro, "bf16", 1)
        cfg = spec.config["model"]
        config = text_config(spec)
        if smoke:  # one layer: the same code path, in seconds
            config.num_hidden_layers = 1
        torch.manual_seed(0)
        model = from_config(config, "seq_cls")
        model, _ = attach_peft(model.to(device), spec)
        batch = {k: v.to(device) for k, v in batch_maker(spec, cfg, num_outputs(spec))(micro, seq).items()}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        _train_step(model, opt, batch, device)  # creates the AdamW state, as the trace's first step does
        measured = None
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            _train_step(model, opt, batch, device)
            torch.cuda.synchronize()
            measured = torch.cuda.max_memory_allocated()
        else:
            _train_step(model, opt, batch, device)
        rows.append({"check": f"memory {label} (batch {micro} x {seq})", "estimate": trace.peak_bytes,
                     "measured": measured})
        del model, opt, batch
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def _train_step(model: Any, opt: Any, batch: dict[str, Any], device: str) -> None:
    """What the Trainer does per step in bf16: autocast forward, backward, clip at 1.0, AdamW."""
    import torch

    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def step_rows(device: str, smoke: bool) -> dict[str, float]:
    """Median step times (s) of `make bench`'s rows, interleaved, in bf16 autocast."""
    import torch

    from benchmarks import measure
    from benchmarks import rows as R

    shape = R.Shape.tiny() if smoke else R.Shape()
    wanted = {"peft-lora r=8", "peft-lora r=16", "capaboost-lora r=8 d=2 p=0.5", "base model",
              "capaboost-lora d=2 p=0.5 merged"}
    specs_ = [s for s in R.default_rows() if s.name in wanted]
    template = R.build_template(shape, device)
    batch = R.make_batch(shape, device)
    steps = {}
    for spec in specs_:
        row = R.build_row(spec, template, batch)

        def timed_step(row: Any = row) -> None:
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
                row.step()

        steps[spec.name] = timed_step
    wall, _ = measure.interleaved(steps, rounds=3 if smoke else 30, warmup=1 if smoke else 5, device=device)
    return {name: statistics.median(times) for name, times in wall.items()}


def masks_and_group(device: str) -> dict[str, Any]:
    """Mask digests of one CapaBoost model built on CPU and on ``device``; a one-process group on it
    (NCCL on CUDA) all-reduces a tensor and gathers the digest."""
    import torch
    import torch.distributed as dist

    import capaboost
    from benchmarks import rows as R

    def digest(where: str) -> str:
        torch.manual_seed(0)
        model = R.build_template(R.Shape.tiny(), where)
        model = capaboost.apply(model, capaboost.CapaBoostConfig(method="lora", d=2, density=0.5, r=8,
                                                                  alpha=16, mask_seed=3))
        return capaboost.mask_digest(model)

    cpu, gpu = digest("cpu"), digest(device)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        x = torch.arange(4.0, device=device)
        dist.all_reduce(x)
        gathered: list[Any] = [None]
        dist.all_gather_object(gathered, gpu)
        group_ok = x.tolist() == [0.0, 1.0, 2.0, 3.0] and gathered == [gpu]
    finally:
        dist.destroy_process_group()
    return {"cpu": cpu, "device": gpu, "backend": backend, "group_ok": group_ok}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="toy sizes on CPU, no bounds (tests the script)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.cpu_smoke:
        line = no_cuda_line()
        if line:
            print(line, file=sys.stderr)
            return 2
    import torch

    device = "cpu" if args.cpu_smoke else "cuda"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"gpu-check on {torch.cuda.get_device_name()} ({torch.__version__}, CUDA {torch.version.cuda})")
    table: list[tuple[str, str, str, bool]] = []   # check, value, bound, ok
    gib = 2**30
    for row in memory_rows(device, args.cpu_smoke):
        if row["measured"] is None:
            table.append((row["check"], f"estimate {row['estimate'] / gib:.2f} GiB (no CUDA: not measured)",
                          "-", True))
            continue
        err = row["estimate"] / row["measured"] - 1
        table.append((row["check"], f"estimate {row['estimate'] / gib:.2f} GiB, measured "
                      f"{row['measured'] / gib:.2f} GiB ({err:+.1%})", f"|err| <= {MEMORY_TOLERANCE:.0%}",
                      args.cpu_smoke or abs(err) <= MEMORY_TOLERANCE))
    t = step_rows(device, args.cpu_smoke)
    d2 = t["capaboost-lora r=8 d=2 p=0.5"] / t["peft-lora r=8"]
    table.append(("step CapaBoost-LoRA d=2 / PEFT LoRA r=8", f"{d2:.3f}", f"<= {STEP_RATIO_MAX:.2f}",
                  args.cpu_smoke or d2 <= STEP_RATIO_MAX))
    table.append(("step PEFT LoRA r=16 / r=8", f"{t['peft-lora r=16'] / t['peft-lora r=8']:.3f}", "-", True))
    table.append(("step CapaBoost-LoRA d=2 / PEFT LoRA r=16",
                  f"{t['capaboost-lora r=8 d=2 p=0.5'] / t['peft-lora r=16']:.3f}", "-", True))
    table.append(("inference merged d=2 / base model",
                  f"{t['capaboost-lora d=2 p=0.5 merged'] / t['base model']:.3f}", "-", True))
    m = masks_and_group(device)
    table.append((f"1-process {m['backend']} group: all-reduce, gather", "ok" if m["group_ok"] else "FAILED",
                  "ok", m["group_ok"]))
    same = m["cpu"] == m["device"]
    table.append((f"mask digest {device} vs cpu", f"{m['device'][:12]} vs {m['cpu'][:12]}", "equal", same))
    widths = [max(len(r[i]) for r in [("check", "value", "bound", True), *table]) for i in range(3)]
    for r in [("check", "value", "bound", "ok"), *((*r[:3], "ok" if r[3] else "FAIL") for r in table)]:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, [*widths, 4], strict=True)).rstrip())
    bounded = [r for r in table if not r[3]]
    return 1 if bounded else 0


if __name__ == "__main__":
    sys.exit(main())
