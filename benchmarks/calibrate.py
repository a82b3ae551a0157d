"""Check preflight's memory estimate against reality on CPU: ``python -m benchmarks.calibrate [batch ...]``.

It lives with the benchmarks because it is one: it runs the bench's own measurement (preflight never
imports benchmarks; this module imports both).

A RoBERTa-shaped model (4 layers, width 512) with CapaBoost-LoRA (d=2, density 0.5) is measured the way
``make bench`` measures peak memory (benchmarks/measure.py: a forked worker's resident-set rise over
two fp32 training steps, after weights, masks and the batch exist and with the AdamW state freed),
and traced by the preflight on fake tensors; the estimate of that rise is the traced peak minus the
weights, buffers and batch. Prints one line per batch size and exits 1 if any differs by > 20%.

The resident set also holds memory glibc keeps after a tensor is freed (its mmap threshold grows
after large frees, and later large tensors come from a heap that is not returned): measured here,
+76% over the live tensor bytes. A GPU's caching allocator counts live tensors (max_memory_allocated),
so the comparison that calibrates the estimator runs the same measurement with
MALLOC_MMAP_THRESHOLD_ fixed, which makes every large tensor its own mapping, returned when freed;
the default-malloc number is printed beside it.
"""
from __future__ import annotations

import os
import sys

import torch

import capaboost
import capaboost.masks
from benchmarks import measure
from benchmarks import rows as R
from preflight.build import RealMasks, to_fake
from preflight.trace import trace_step

ROW = R.RowSpec("capaboost-lora r=8 d=2 p=0.5", "lora", "capaboost", d=2, density=0.5)
TOLERANCE = 0.20


def shape(batch: int) -> R.Shape:
    return R.Shape(layers=4, hidden=512, heads=8, intermediate=2048, batch=batch, seq=128)


def estimate(shp: R.Shape) -> int:
    """Traced peak bytes above what exists before the bench's measured steps."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import RobertaForSequenceClassification

    with torch.device("meta"), capaboost.masks.mask_maker(RealMasks()):
        model = capaboost.apply(RobertaForSequenceClassification(shp.config()), capaboost.CapaBoostConfig(
            method=ROW.method, d=ROW.d, density=ROW.density, r=ROW.r, alpha=16))
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    to_fake(model, mode)
    static = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])

    def batch(n: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(3, 100, (n, shp.seq))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "labels": torch.zeros(n, dtype=torch.long)}

    with mode:
        trace = trace_step(model, batch, "fp32", 1, shp.batch)
    batch_bytes = 2 * shp.batch * shp.seq * 8 + shp.batch * 8
    return trace.peak_bytes - static - batch_bytes


def main(batches: list[int]) -> int:
    worst, mib = 0.0, 2**20
    for b in batches:
        shp = shape(b)
        os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
        default = measure.cpu_peaks([ROW], shp, threads=1, steps=2, seed=0)[ROW.name]["peak_bytes"]
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"  # inherited by the bench's worker process
        measured = measure.cpu_peaks([ROW], shp, threads=1, steps=2, seed=0)[ROW.name]["peak_bytes"]
        os.environ.pop("MALLOC_MMAP_THRESHOLD_")
        est = estimate(shp)
        err = est / measured - 1
        worst = max(worst, abs(err))
        print(f"batch {b} x seq {shp.seq}, {shp.layers} layers x {shp.hidden}, fp32: "
              f"estimated {est / mib:.0f} MiB; "
              f"measured {measured / mib:.0f} MiB with MALLOC_MMAP_THRESHOLD_=131072 ({err:+.1%}), "
              f"{default / mib:.0f} MiB with glibc's default (+{default / est - 1:.0%} kept by malloc)")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]] or [8, 32]))
