"""One training step traced on fake tensors: peak live bytes and FLOPs, without memory or a GPU.

The step is the Trainer's: forward under autocast, backward, AdamW step, grads set to None; with
gradient accumulation the grads of earlier micro-batches stay alive during the next forward. The
AdamW state exists before the measured step (a one-example step creates it), as in steady state.

Memory: a dispatch mode sees every tensor an op creates and counts its storage until Python frees
it, so the count is what autograd keeps (activations saved for backward), the weights, the grads,
the optimizer state and the transient outputs at each instant. It is the caching allocator's
*requested* bytes; the CUDA context and fragmentation are added by the caller (``hardware``).

Precision: CUDA autocast cannot run without a GPU (fake CUDA tensors fail in backward), so bf16 /
fp16 are traced with CPU autocast, with softmax, log_softmax and layer_norm forced to fp32 as CUDA
autocast does (CPU autocast keeps them in low precision). Attention on fake CPU tensors takes the
math path (the L x L scores are kept): for RoBERTa, whose GPU SDPA kernels keep no score matrix,
this is an upper bound; DeBERTa-v2 runs this eager path on GPUs too.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakIdKeyDictionary

LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}


class LiveBytes(TorchDispatchMode):
    """Bytes of every storage alive now, and the most ever alive at once (``peak``)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen = WeakIdKeyDictionary()  # storage objects live as long as their memory

    def track(self, tensor: Any) -> None:
        if not isinstance(tensor, torch.Tensor):
            return
        storage = tensor.untyped_storage()
        if storage in self._seen:  # a view, or an in-place op's result: already counted
            return
        nbytes = storage.nbytes()
        self._seen[storage] = nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, nbytes)

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            self.track(leaf)
        return out


@contextlib.contextmanager
def cuda_autocast_lists() -> Iterator[None]:
    """Make CPU autocast run softmax / log_softmax / layer_norm in fp32, as CUDA autocast does."""
    originals = {name: getattr(F, name) for name in ("softmax", "log_softmax", "layer_norm")}

    def fp32(fn: Callable) -> Callable:
        def wrapped(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if not torch.is_autocast_enabled("cpu"):
                return fn(x, *args, **kwargs)
            with torch.autocast("cpu", enabled=False):
                return fn(x.float(), *args, **kwargs)
        return wrapped

    for name, fn in originals.items():
        setattr(F, name, fp32(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(F, name, fn)


@dataclass(frozen=True)
class StepTrace:
    peak_bytes: int          # the high-water mark of live storage during the measured step
    resident_bytes: int      # weights, buffers (masks) and AdamW state before it (no grads, no batch)
    forward_flops: int       # one micro-batch
    backward_flops: int      # one micro-batch

    @property
    def train_flops(self) -> int:
        return self.forward_flops + self.backward_flops


def trace_step(model: torch.nn.Module, make_batch: Callable[[int], dict[str, torch.Tensor]], precision: str,
               grad_accum: int, micro_batch: int) -> StepTrace:
    """Trace one training step of ``model`` (fake tensors) at ``micro_batch`` examples per forward.

    A first step on one example creates the AdamW state; the measured step then runs
    ``min(grad_accum, 2)`` micro-batches (the second forward sees the first one's grads) and the update.
    """
    tracker = LiveBytes()
    for tensor in [*model.parameters(), *model.buffers()]:
        tracker.track(tensor)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, foreach=False)
    autocast = torch.autocast("cpu", dtype=LOW.get(precision, torch.float32), enabled=precision in LOW)
    flops = {"forward": 0, "backward": 0}
    model.train()

    def micro(batch: dict[str, torch.Tensor], count: bool) -> None:
        counter = FlopCounterMode(display=False) if count else contextlib.nullcontext()
        with counter, autocast:
            out = model(**batch)
            loss = out["loss"] if isinstance(out, dict) else out.loss
        if count:
            flops["forward"] = counter.get_total_flops()
            counter = FlopCounterMode(display=False)
        with counter:
            loss.backward()
        if count:
            flops["backward"] = counter.get_total_flops()

    with tracker, cuda_autocast_lists():
        micro(make_batch(1), count=False)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        resident = tracker.live
        tracker.peak = tracker.live
        batch = make_batch(micro_batch)
        for i in range(min(grad_accum, 2)):
            micro(batch, count=i == 0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return StepTrace(tracker.peak, resident, flops["forward"], flops["backward"])
