"""Synthetic capacity check (the paper's Fig. 1 idea), no data and no pretrained model needed.

A frozen random layer ``W0`` must learn a fixed random full-rank update ``T``: inputs ``x``,
targets ``(W0 + T) x``, only the PEFT delta trains. With isotropic inputs the error that remains
is ``||dW - T||_F^2``, so every method is scored by the relative residual
``||dW - T||^2 / ||T||^2``. For LoRA of rank r the best achievable value is known exactly
(Eckart-Young: the energy of T beyond its top r singular values), an oracle independent of
the training code. CapaBoost's delta has rank min(d*r, dim) (Theorem 3.1) at about
``1 - (1 - density)^d`` of the parameters, so it can go below the rank-r bound at the same
parameter count -- or not: the numbers say which.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import capaboost
from capaboost.analysis import delta_rank, expected_fraction, rank_bound
from tasks.files import atomic_path, write_text


@dataclass(frozen=True)
class Setup:
    """Problem size and optimiser; ``tiny()`` is the test-suite size."""

    dim: int = 64
    samples: int = 256
    steps: int = 1000
    lr: float = 1e-2
    trials: int = 3
    density: float = 0.5
    lora_ranks: tuple[int, ...] = (2, 3, 4, 6, 8, 12, 16)
    # (r, d): d=2 at density 0.5 keeps 3/4 of 2*r*dim, so r = 4, 8, 16 match LoRA r = 3, 6, 12
    capa_points: tuple[tuple[int, int], ...] = ((4, 2), (8, 2), (16, 2), (8, 4), (16, 4))
    rank_r: int = 8
    rank_ds: tuple[int, ...] = (1, 2, 4, 8)

    @classmethod
    def tiny(cls) -> Setup:
        return cls(dim=16, samples=32, steps=400, lr=2e-2, trials=1, lora_ranks=(2, 3, 4),
                   capa_points=((4, 2),), rank_r=2, rank_ds=(1, 2, 4, 8))


class _Probe(nn.Module):
    """One frozen linear layer named ``layer``: the smallest model ``capaboost.apply`` accepts."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.layer.weight.copy_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def make_problem(dim: int, samples: int, seed: int) -> dict[str, torch.Tensor]:
    """Frozen W0, target update T (both ~N(0, 1/dim), full rank a.s.), whitened inputs X, targets Y."""
    if dim < 2 or samples < dim:
        raise ValueError(f"need dim >= 2 and samples >= dim (identifiable), got dim={dim}, samples={samples}")
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(dim, dim, generator=gen) / math.sqrt(dim)
    target = torch.randn(dim, dim, generator=gen) / math.sqrt(dim)
    # whitened inputs (X^T X / n = I exactly): the training loss *is* ||dW - T||_F^2, no sampling noise
    q, _ = torch.linalg.qr(torch.randn(samples, dim, generator=gen, dtype=torch.float64))
    x = (q * math.sqrt(samples)).float()
    return {"w0": w0, "target": target, "x": x, "y": x @ (w0 + target).T}


def eckart_young(target: torch.Tensor, rank: int) -> float:
    """Least relative residual of any rank-``rank`` matrix: the energy beyond the top singular values."""
    s2 = torch.linalg.svdvals(target.double()) ** 2
    return float(s2[rank:].sum() / s2.sum())


def fit(problem: dict[str, torch.Tensor], r: int, d: int, density: float, setup: Setup,
        seed: int, mask: str = "random") -> dict[str, Any]:
    """Train only the (CapaBoost-)LoRA delta on the problem; d=1, density=1 is plain LoRA."""
    torch.manual_seed(seed)
    cfg = capaboost.CapaBoostConfig(method="lora", d=d, density=density, mask=mask, mask_seed=seed, r=r,
                                    alpha=2 * r, target_modules=("layer",))  # scaling 2 for every r
    model = capaboost.apply(_Probe(problem["w0"]), cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=setup.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, setup.steps)
    x, y = problem["x"], problem["y"]
    for _ in range(setup.steps):
        opt.zero_grad(set_to_none=True)
        loss = (model(x) - y).pow(2).sum(1).mean()
        loss.backward()
        opt.step()
        sched.step()
    layer = model.layer
    delta = layer.delta_weight().detach()
    target = problem["target"]
    return {"r": r, "d": d, "density": density, "mask": mask, "seed": seed,
            "effective": capaboost.count_parameters(model)["effective"],
            "residual": float((delta - target).pow(2).sum() / target.pow(2).sum()),
            "rank": delta_rank(layer), "rank_bound": rank_bound(d, r, tuple(delta.shape)),
            "delta": delta}


def run(setup: Setup, out_dir: Path | str, progress: bool = True) -> dict[str, Any]:
    """All fits of the check; writes capacity.json, capacity.md and figures/capacity.png under out_dir."""
    out_dir = Path(out_dir)
    jobs = [("lora", r, 1, 1.0) for r in setup.lora_ranks]
    jobs += [("capaboost", r, d, setup.density) for r, d in setup.capa_points]
    jobs += [("rank", setup.rank_r, d, setup.density) for d in setup.rank_ds
             if ("capaboost", setup.rank_r, d, setup.density) not in jobs]
    rows: list[dict[str, Any]] = []
    same: list[dict[str, Any]] = []
    bar = _bar(len(jobs) * setup.trials + setup.trials, progress)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 64x64 matmuls: extra threads only add sync cost (10x slower on a busy box)
    try:
        for trial in range(setup.trials):
            problem = make_problem(setup.dim, setup.samples, seed=1000 + trial)
            for kind, r, d, density in jobs:
                row = fit(problem, r, d, density, setup, seed=trial)
                row.pop("delta")
                row.update(kind=kind, trial=trial, eckart_young=eckart_young(problem["target"], r))
                rows.append(row)
                bar.update(1)
            # ablation: d=2 branches under one *shared* mask -> still rank r (different masks are the point)
            row = fit(problem, setup.rank_r, 2, setup.density, setup, seed=trial, mask="same")
            row.pop("delta")
            same.append({**row, "kind": "same-mask", "trial": trial,
                         "eckart_young": eckart_young(problem["target"], setup.rank_r)})
            bar.update(1)
    finally:
        torch.set_num_threads(threads)
        bar.close()
    summary = _summarise(rows + same, setup)
    result = {"setup": asdict(setup), "runs": rows + same, "summary": summary,
              "equal_params": _equal_params(summary, setup)}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "capacity.json", json.dumps(result, indent=2) + "\n")
    write_text(out_dir / "capacity.md", to_markdown(result))
    plot(result, out_dir / "figures" / "capacity.png")
    return result


def _summarise(rows: list[dict[str, Any]], setup: Setup) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        method = "lora" if row["d"] == 1 and row["density"] == 1.0 else f"capaboost-{row['mask']}"
        groups.setdefault((method, row["r"], row["d"], row["density"]), []).append(row)
    out = []
    for (method, r, d, density), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        res = torch.tensor([x["residual"] for x in g], dtype=torch.float64)
        out.append({"method": method, "r": r, "d": d, "density": density, "n": len(g),
                    "effective": round(sum(x["effective"] for x in g) / len(g), 1),
                    "residual_mean": float(res.mean()),
                    "residual_std": float(res.std()) if len(g) > 1 else 0.0,
                    "rank": [x["rank"] for x in g], "rank_bound": g[0]["rank_bound"],
                    "eckart_young_rank_r": sum(x.get("eckart_young", math.nan) for x in g) / len(g)})
    return out


def _equal_params(summary: list[dict[str, Any]], setup: Setup) -> list[dict[str, Any]]:
    """Each CapaBoost point against the smallest LoRA with at least its *design* size
    (1 - (1 - density)^d) * 2 * r * dim -- the paper's matching rule; the measured union of the
    random masks scatters around it -- together with that LoRA's oracle bound."""
    lora = [s for s in summary if s["method"] == "lora"]
    pairs = []
    for s in summary:
        design = expected_fraction(s["d"], s["density"]) * 2 * s["r"] * setup.dim
        bigger = [x for x in lora if x["effective"] >= design - 1e-9]
        if s["method"] != "capaboost-random" or s["d"] == 1 or not bigger:
            continue
        match = min(bigger, key=lambda x: x["effective"])
        pairs.append({"capaboost": f"r={s['r']} d={s['d']}", "capaboost_design": design,
                      "capaboost_effective": s["effective"],
                      "capaboost_residual": s["residual_mean"], "capaboost_rank": s["rank"],
                      "lora": f"r={match['r']}", "lora_effective": match["effective"],
                      "lora_residual": match["residual_mean"],
                      "lora_best_possible": match["eckart_young_rank_r"],
                      "capaboost_better": s["residual_mean"] < match["residual_mean"]})
    return pairs


def to_markdown(result: dict[str, Any]) -> str:
    st = result["setup"]
    size = f"{st['dim']}x{st['dim']}"
    lines = [f"# Capacity check: fit a random full-rank {size} update through a frozen layer", "",
             f"Relative residual ||dW - T||^2 / ||T||^2 after {st['steps']} Adam steps "
             f"(lr {st['lr']}, cosine), "
             f"mean +- std over {st['trials']} trials (new target, masks and init each trial). "
             "`best rank-r` = Eckart-Young, the least residual any rank-r matrix (so any LoRA of rank r) "
             "can reach.", "",
             "| method | r | d | density | effective params | residual | rank of dW | min(d*r, dim) | "
             "best rank-r |", "|---|---|---|---|---|---|---|---|---|"]
    for s in result["summary"]:
        ranks = sorted(set(s["rank"]))
        lines.append(f"| {s['method']} | {s['r']} | {s['d']} | {s['density']} | {s['effective']:.0f} | "
                     f"{s['residual_mean']:.4f} +- {s['residual_std']:.4f} | "
                     f"{'/'.join(map(str, ranks))} | {s['rank_bound']} | {s['eckart_young_rank_r']:.4f} |")
    lines += ["", "## Equal effective parameters", "",
              "| CapaBoost | params (design / measured) | residual | LoRA | params | residual "
              "| best rank-r | CapaBoost better |", "|---|---|---|---|---|---|---|---|"]
    for p in result["equal_params"]:
        lines.append(f"| {p['capaboost']} | {p['capaboost_design']:.0f} / {p['capaboost_effective']:.0f} | "
                     f"{p['capaboost_residual']:.4f} | "
                     f"{p['lora']} | {p['lora_effective']:.0f} | {p['lora_residual']:.4f} | "
                     f"{p['lora_best_possible']:.4f} | {'yes' if p['capaboost_better'] else 'no'} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Left: residual vs effective parameters (LoRA curve, its oracle bound, CapaBoost points).
    Right: measured rank of dW vs d at fixed r against min(d*r, dim)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st, summary = result["setup"], result["summary"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    lora = sorted((s for s in summary if s["method"] == "lora"), key=lambda s: s["effective"])
    xs = [s["effective"] for s in lora]
    ax.errorbar(xs, [s["residual_mean"] for s in lora], [s["residual_std"] for s in lora], marker="o",
                label="LoRA (trained)")
    ax.plot(xs, [s["eckart_young_rank_r"] for s in lora], "k--", lw=1,
            label="best possible rank-r (Eckart-Young)")
    for s in lora:
        ax.annotate(f"r={s['r']}", (s["effective"], s["residual_mean"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    for d, marker in ((2, "s"), (4, "^"), (8, "D")):
        pts = sorted((s for s in summary if s["method"] == "capaboost-random" and s["d"] == d
                      and s["density"] == st["density"]), key=lambda s: s["effective"])
        if pts:
            ax.errorbar([s["effective"] for s in pts], [s["residual_mean"] for s in pts],
                        [s["residual_std"] for s in pts], marker=marker, ls=":",
                        label=f"CapaBoost d={d}, density {st['density']}")
            for s in pts:
                ax.annotate(f"r={s['r']}", (s["effective"], s["residual_mean"]), textcoords="offset points",
                            xytext=(4, -10), fontsize=7)
    ax.set(xscale="log", xlabel="effective trainable parameters", ylabel="relative residual ||dW-T||²/||T||²",
           title=f"Fit a random full-rank {st['dim']}x{st['dim']} update")
    ax.legend(fontsize=7)
    rank_pts = sorted((s for s in summary if s["method"] == "capaboost-random" and s["r"] == st["rank_r"]
                       and s["density"] == st["density"]), key=lambda s: s["d"])
    lora_r = [s for s in summary if s["method"] == "lora" and s["r"] == st["rank_r"]]
    ds = [1] * bool(lora_r) + [s["d"] for s in rank_pts]
    measured = [lora_r[0]["rank"] for _ in lora_r] + [s["rank"] for s in rank_pts]
    dense = sorted(set(ds) | set(st["rank_ds"]))
    bx.plot(dense, [min(d * st["rank_r"], st["dim"]) for d in dense], "k--", lw=1, label="min(d·r, dim)")
    for d, ranks in zip(ds, measured, strict=True):
        bx.scatter([d] * len(ranks), ranks, color="C1", zorder=3)
    bx.scatter([], [], color="C1", label=f"measured rank of dW (r={st['rank_r']})")
    same = [s for s in summary if s["method"] == "capaboost-same"]
    for s in same:
        bx.scatter([s["d"]] * len(s["rank"]), s["rank"], marker="x", color="C3", zorder=3,
                   label="same mask for every branch")
    bx.set_xticks([], minor=True)
    bx.set(xscale="log", xticks=dense, xticklabels=[str(d) for d in dense], xlabel="d (branches)",
           ylabel="rank of dW", title="Rank of the learned update vs d (Thm 3.1)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="capacity check", disable=not enabled, leave=False)
