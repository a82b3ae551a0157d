"""The preflight's table: one row per run, then the sweep's totals and the assumptions behind them."""
from __future__ import annotations

from collections import Counter

from preflight import cost, facts
from preflight.plan import RunCheck, Target


def varying(rows: list[RunCheck]) -> list[str]:
    """Short run ids: only the overrides that differ between the sweep's runs."""
    from tasks.config.sweeps import varying as names

    return names([r.overrides for r in rows])


def _num(n: float | None, fmt: str) -> str:
    return "-" if n is None else format(n, fmt)


def table(rows: list[RunCheck], target: Target) -> str:
    head = ("run", "status", "peft", "effective", "trainable", "prec", "peak GiB", "fits", "fix",
            "TFLOP/step", "steps", "GPU-h")
    body = []
    for name, r in zip(varying(rows), rows, strict=True):
        c = r.counts
        fix = f"{r.fix} ({r.fix_gib:.1f} GiB)" if r.fix else ("none" if r.status == "NO-FIT" else "")
        body.append((name, r.status, _num(c.get("peft"), ","), _num(c.get("effective"), ","),
                     _num(c.get("trainable"), ","), r.precision, _num(r.need_gib, ".1f"),
                     {True: "yes", False: "NO", None: "?"}[r.fits], fix, _num(r.tflop_per_step, ".2f"),
                     str(r.steps), _num(r.gpu_hours, ".2f")))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)) for line in [head, *body]]
    return "\n".join(lines)


def totals(rows: list[RunCheck], target: Target) -> dict[str, float | int]:
    status = Counter(r.status for r in rows)
    return {"runs": len(rows), "ok": status["ok"], "fail": status["FAIL"], "no_fit": status["NO-FIT"],
            "over_gpu_mem": sum(1 for r in rows if r.fits is False),
            "gpu_hours": sum(r.gpu_hours or 0.0 for r in rows),
            "total_pflop": sum(r.total_tflop for r in rows) / 1e3}


def summary(name: str, rows: list[RunCheck], target: Target) -> str:
    g = facts.load("gpus")
    t = totals(rows, target)
    lines = [f"sweep {name}: {t['runs']} runs on {target.gpu} with {target.gpu_mem:g} GiB: {t['ok']} ok, "
             f"{t['fail']} cannot start, {t['over_gpu_mem']} over {target.gpu_mem:g} GiB "
             f"({t['no_fit']} with no fix); {t['total_pflop']:,.0f} PFLOP, {t['gpu_hours']:,.1f} GPU-hours "
             f"at MFU {g['mfu']:.2f}"]
    problems = Counter(p for r in rows for p in r.problems)
    lines += [f"  cannot start ({n} runs): {p}" for p, n in problems.items()]
    notes = Counter(r.precision_note for r in rows if r.precision_note)
    lines += [f"  assumption ({n} runs): {p}" for p, n in notes.items()]
    fixes = Counter(r.fix for r in rows if r.fix)
    lines += [f"  over {target.gpu_mem:g} GiB ({n} runs): fix {f}" for f, n in fixes.items()]
    gen = [r for r in rows if r.gen_gib is not None]
    if gen:
        lines.append(f"  generation ({len(gen)} runs, task=math): peak GiB = max(training step, generation); "
                     f"generation {min(r.gen_gib for r in gen):.1f}-{max(r.gen_gib for r in gen):.1f} GiB "
                     f"(weights + AdamW state + KV cache of a batch at 800 positions), training "
                     f"{min(r.train_gib for r in gen):.1f}-{max(r.train_gib for r in gen):.1f} GiB; "
                     f"{sum(r.gen_hours for r in gen):.2f} of the GPU-hours are generation (bandwidth-bound "
                     f"at MBU {g['mbu']}, every batch decoding 300 tokens: an upper bound)")
    lines.append(f"  peak GiB = traced peak x {1 + g['fragmentation']:.2f} + {g['overhead_gib']} GiB; "
                 f"text at max_seq_length (padded worst case); GPU-h = FLOPs / ({target.gpu} peak x MFU "
                 f"{g['mfu']}), training + per-epoch evaluation")
    return "\n".join(lines)


def wall_time(rows: list[RunCheck], gpus: int) -> str:
    """The sweep's wall time on ``gpus`` GPUs (cost.wall_hours), beside its GPU-hours."""
    hours = [r.gpu_hours for r in rows if r.gpu_hours is not None]
    if not hours:
        return f"wall time on {gpus} GPUs: no run has an estimate"
    total, wall = sum(hours), cost.wall_hours(hours, gpus)
    return (f"wall time on {gpus} GPUs: {wall:,.1f} h ({len(hours)} runs, longest first, one per GPU; "
            f"{total:,.1f} GPU-hours / {gpus} = {total / gpus:,.1f} h, longest run {max(hours):,.1f} h)")
