"""CapaBoost-LoRA: delta W = scaling * sum_i (B * M^B_i)(A * M^A_i), one shared A and B."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .branches import project_in, stack_in, stack_out


def projection(module: nn.Module) -> tuple[int, int, bool] | None:
    """(out_features, in_features, fan_in_fan_out) of a linear projection, None for anything else.

    fan_in_fan_out (PEFT's name): the weight is stored [in, out] and applied as ``x @ W``, as in
    transformers' ``Conv1D`` (GPT-2); ``nn.Linear`` stores [out, in].
    """
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features, False
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None \
            and module.weight.dim() == 2 and module.weight.shape[1] == getattr(module, "nf", None):
        return module.weight.shape[1], module.weight.shape[0], True
    return None


class LoRALinear(nn.Module):
    """Wraps a frozen linear projection (``base_layer``: ``nn.Linear`` or a transformers ``Conv1D``)
    with d masked, weight-tied LoRA branches.

    ``init="peft"``: A ~ kaiming-uniform(a=sqrt 5) over fan_in=in_features (PEFT, loralib).
    ``init="official"``: the CapaBoost code builds A as ``nn.Linear(r, in)`` used transposed,
    so its kaiming bound is 1/sqrt(r), about 10x larger at r=8. B starts at zero either way.

    ``rows=(start, stop)`` adapts only those output rows (q or v of a fused qkv projection): B is
    [stop - start, r] and delta W is zero elsewhere. ``base_layer`` may itself be a LoRALinear (v
    wrapping q on one fused projection); ``weight`` always reaches the frozen Linear's, in its own
    layout: merge folds delta W in transposed when the base stores it [in, out] (``Conv1D``).
    """

    def __init__(self, base_layer: nn.Module, r: int, alpha: float, mask_A: torch.Tensor,
                 mask_B: torch.Tensor, dropout: float = 0.0, init: str = "peft",
                 rows: tuple[int, int] | None = None) -> None:
        super().__init__()
        inner = base_layer
        while isinstance(inner, LoRALinear):
            inner = inner.base_layer
        found = projection(inner)
        if found is None:
            raise TypeError(f"LoRA wraps nn.Linear or transformers Conv1D, not {type(inner).__name__}")
        out_total, in_features, self.fan_in_fan_out = found
        self.shape = (out_total, in_features)  # (out, in) of the base projection, whatever its layout
        self.rows = rows or (0, out_total)
        out_features = self.rows[1] - self.rows[0]
        d = mask_A.shape[0]
        if mask_A.shape != (d, r, in_features) or mask_B.shape != (d, out_features, r):
            raise ValueError(f"mask shapes {tuple(mask_A.shape)}, {tuple(mask_B.shape)} do not fit "
                             f"r={r}, d={d}, (out, in) {self.shape}, rows {self.rows}")
        self.base_layer = base_layer
        self.d, self.r, self.dropout = d, r, dropout
        self.scaling = alpha / r
        factory = {"device": base_layer.weight.device}
        self.lora_A = nn.Parameter(torch.empty(r, in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, **factory))
        bound = 1 / math.sqrt(r if init == "official" else in_features)
        with torch.no_grad():
            self.lora_A.uniform_(-bound, bound)  # == kaiming_uniform_(a=sqrt(5)) over that fan_in
        # Masks are derived state (rebuilt from the seed), so not persistent in state_dict.
        self.register_buffer("mask_A", mask_A.to(factory["device"]), persistent=False)
        self.register_buffer("mask_B", mask_B.to(factory["device"]), persistent=False)
        self.merged = False

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (of the innermost Linear) that merge folds delta W into."""
        return self.base_layer.weight

    def masked_parameters(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        return [(self.lora_A, self.mask_A), (self.lora_B, self.mask_B)]

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_s [d*r, in], B_s [out, d*r]): the rank-d*r factors of delta W / scaling."""
        return stack_in(self.lora_A, self.mask_A), stack_out(self.lora_B, self.mask_B)

    def delta_weight(self) -> torch.Tensor:
        """scaling * sum_i (B*M^B_i)(A*M^A_i), placed in its rows of the (out, in) base projection
        (the ``.T`` of a fan_in_fan_out weight, which merge adds transposed)."""
        a, b = self.stacked()
        return self._place(self.scaling * (b @ a), dim=0)

    def _delta_in_layout(self) -> torch.Tensor:
        delta = self.delta_weight()
        return (delta.T if self.fan_in_fan_out else delta).to(self.weight.dtype)

    def _place(self, part: torch.Tensor, dim: int) -> torch.Tensor:
        start, stop = self.rows
        pad = [0, 0] * (part.dim() - 1 - dim % part.dim()) + [start, self.shape[0] - stop]
        return F.pad(part, pad) if pad[-2:] != [0, 0] else part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged:
            if self.training and torch.is_grad_enabled():
                raise RuntimeError("training a merged CapaBoost LoRA layer would not update it: "
                                   "call capaboost.unmerge(model) first")
            return out
        a, b = self.stacked()
        h = project_in(x.to(a.dtype), a, self.d, self.dropout, self.training)
        return out + self._place(self.scaling * (h @ b.T), dim=-1).to(out.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.weight.add_(self._delta_in_layout())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight.sub_(self._delta_in_layout())
            self.merged = False

    def extra_repr(self) -> str:
        rows = f", rows={self.rows}" if self.rows != (0, self.shape[0]) else ""
        return f"r={self.r}, d={self.d}, scaling={self.scaling:g}, dropout={self.dropout}{rows}"
