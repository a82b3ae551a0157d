"""One LoRA layer in isolation: where a train step's adapter time goes (torch.profiler).

    .venv/bin/python benchmarks/profile_lora.py [--tokens 1024] [--hidden 768] [--iters 30] [--threads 1]

The whole-model bench is dominated by the frozen backbone; this times only the adapter part
(a frozen Linear + LoRA, forward, backward into x and the LoRA weights, AdamW step, official hooks),
interleaved, and prints the top operators of CapaBoost d=4 vs the official d-copies loop.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import peft  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import capaboost  # noqa: E402
from benchmarks import official  # noqa: E402


class _One(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.query(x)


def layers(hidden: int) -> dict[str, tuple[nn.Module, bool]]:
    """name -> (module whose output is the layer output, uses official hooks)."""
    torch.manual_seed(0)
    out: dict[str, tuple[nn.Module, bool]] = {}
    for r in (8, 16, 32):
        m = peft.get_peft_model(_One(hidden), peft.LoraConfig(r=r, lora_alpha=16, target_modules=["query"]))
        out[f"peft r={r}"] = (m, False)
    for d in (1, 2, 4):
        cfg = capaboost.CapaBoostConfig(d=d, density=0.5, target_modules=("query",))
        out[f"capaboost d={d}"] = (capaboost.apply(_One(hidden), cfg), False)
        if d > 1:
            out[f"official d={d}"] = (official.to_official(capaboost.apply(_One(hidden), cfg)), True)
    base = _One(hidden).requires_grad_(False)
    out["frozen linear"] = (base, False)
    for m, _ in out.values():
        with torch.no_grad():  # a non-zero B, as after some training
            for n, p in m.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
    return out


def stepper(model: nn.Module, hooks: bool, x: torch.Tensor):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if params else None

    def step() -> None:
        x.grad = None
        model(x).sum().backward()
        if hooks:
            official.after_backward(model)
        if opt:
            opt.step()
        if hooks:
            official.after_step(model)
        if opt:
            opt.zero_grad(set_to_none=True)
    return step


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.randn(args.tokens, args.hidden, requires_grad=True)  # grads flow on to earlier layers
    steps = {name: stepper(m, hooks, x) for name, (m, hooks) in layers(args.hidden).items()}
    for fn in steps.values():
        fn()
    times: dict[str, list[float]] = {n: [] for n in steps}
    order, rng = list(steps), random.Random(0)
    for _ in range(args.iters):
        rng.shuffle(order)
        for n in order:
            t = time.process_time()
            steps[n]()
            times[n].append(time.process_time() - t)
    floor = statistics.median(times["frozen linear"])
    print(f"{args.tokens} tokens x {args.hidden}, threads {args.threads}, process CPU ms, "
          f"median of {args.iters}")
    for n, t in times.items():
        med = statistics.median(t)
        print(f"  {n:16} {1e3 * med:8.2f} ms   adapter part {1e3 * (med - floor):7.2f} ms")
    if args.no_profile:
        return
    for n in ("capaboost d=4", "official d=4"):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                steps[n]()
        print(f"\n== {n}: top ops by self CPU time (5 steps)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12,
                                        max_name_column_width=40))


if __name__ == "__main__":
    main()
