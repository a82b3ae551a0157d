"""The official CapaBoost training scheme, re-written as the benchmark's comparison point.

The official code (LINs-lab/CapaBoost) keeps d *physical* copies of each PEFT weight, one per
mask. Per step: the forward loops over the copies (each holds its masked weight) and sums the
branches; after backward each copy's gradient is masked, the d gradients are summed and written
back to every copy, the copies are reset to the dense tied weight, the optimizer steps all d
copies (d optimizer states), then the dense weight is read back from copy 0 and the copies are
re-masked. We keep that structure but use in-place copies instead of the official clones, so
the comparison flatters the official scheme, not ours.

``to_official(model)`` converts a model built by ``capaboost.apply`` (same masks, same initial
weights), so both compute the same training and differ only in how.
"""
from __future__ import annotations

import torch
from torch import nn

import capaboost

__all__ = ["CopiesLoRALinear", "CopiesBottleneck", "to_official", "tied_groups", "count_parameters",
           "after_backward", "after_step"]


class _TiedCopies(nn.Module):
    """Owns groups of d tied copies, their float masks and the dense tied weight of each group."""

    def _add_group(self, name: str, weight: torch.Tensor, mask: torch.Tensor | None) -> None:
        d = self.d
        copies = nn.ParameterList([nn.Parameter(weight.detach().clone()) for _ in range(d)])
        setattr(self, name, copies)
        self.register_buffer(name + "_dense", weight.detach().clone(), persistent=False)
        if mask is not None:
            self.register_buffer(name + "_mask", mask.to(weight.dtype), persistent=False)
        self._groups.append(name)
        self._apply_masks(name)

    def groups(self) -> list[tuple[nn.ParameterList, torch.Tensor, torch.Tensor | None]]:
        return [(getattr(self, n), getattr(self, n + "_dense"), getattr(self, n + "_mask", None))
                for n in self._groups]

    def _apply_masks(self, name: str) -> None:
        mask = getattr(self, name + "_mask", None)
        if mask is not None:
            with torch.no_grad():
                for p, m in zip(getattr(self, name), mask, strict=True):
                    p.mul_(m)

    @torch.no_grad()
    def after_backward(self) -> None:
        """Mask each copy's grad, sum over copies, write the sum back, restore the dense weight."""
        for copies, dense, mask in self.groups():
            grads = [p.grad for p in copies]
            if any(g is None for g in grads):
                continue
            if mask is not None:
                for g, m in zip(grads, mask, strict=True):
                    g.mul_(m)
            total = torch.stack(grads).sum(0) if len(grads) > 1 else grads[0]
            for p, g in zip(copies, grads, strict=True):
                if g is not total:
                    g.copy_(total)
                p.copy_(dense)

    @torch.no_grad()
    def after_step(self) -> None:
        """Read the dense weight back from copy 0, then re-mask every copy."""
        for name, (copies, dense, _) in zip(self._groups, self.groups(), strict=True):
            dense.copy_(copies[0])
            self._apply_masks(name)


class CopiesLoRALinear(_TiedCopies):
    """Frozen ``base_layer`` + d LoRA copies: out = base(x) + s * sum_i (x A_i^T) B_i^T."""

    def __init__(self, layer: capaboost.LoRALinear) -> None:
        super().__init__()
        self.base_layer, self.d, self.scaling, self._groups = layer.base_layer, layer.d, layer.scaling, []
        self._add_group("lora_A", layer.lora_A, layer.mask_A)
        self._add_group("lora_B", layer.lora_B, layer.mask_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        delta = (x @ self.lora_A[0].T) @ self.lora_B[0].T
        for a, b in zip(list(self.lora_A)[1:], list(self.lora_B)[1:], strict=True):
            delta = delta + (x @ a.T) @ b.T
        return out + self.scaling * delta


class CopiesBottleneck(_TiedCopies):
    """d copies of a bottleneck adapter: sum_i up_i(relu(down_i x + b_down)) + b_up.

    Biases are copied too (unmasked); summing their grads matches one shared bias.
    """

    def __init__(self, block: capaboost.MaskedBottleneck) -> None:
        super().__init__()
        self.d, self.activation, self._groups = block.d, block.activation, []
        self._add_group("down_weight", block.down_weight, block.mask_down)
        self._add_group("down_bias", block.down_bias, None)
        self._add_group("up_weight", block.up_weight, block.mask_up)
        self._add_group("up_bias", block.up_bias, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for wd, bd, wu, bu in zip(self.down_weight, self.down_bias, self.up_weight, self.up_bias,
                                  strict=True):
            branch = self.activation(x @ wd.T + bd) @ wu.T + bu
            out = branch if out is None else out + branch
        return out


def to_official(model: nn.Module) -> nn.Module:
    """Swap every CapaBoost LoRA layer / bottleneck of ``model`` for its d-copies form, in place."""
    found = capaboost.peft_modules(model)
    if not found:
        raise ValueError("to_official needs a model built by capaboost.apply (method lora or padapter)")
    for name, module in found.items():
        new = CopiesLoRALinear(module) if isinstance(module, capaboost.LoRALinear) \
            else CopiesBottleneck(module)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def tied_groups(model: nn.Module) -> list[_TiedCopies]:
    return [m for m in model.modules() if isinstance(m, _TiedCopies)]


def after_backward(model: nn.Module) -> None:
    for m in tied_groups(model):
        m.after_backward()


def after_step(model: nn.Module) -> None:
    for m in tied_groups(model):
        m.after_step()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """trainable: physical numel (all d copies); effective: each tied group once, union of masks."""
    copies = {id(p): group for m in tied_groups(model) for group in m.groups() for p in group[0]}
    trainable = [p for p in model.parameters() if p.requires_grad]
    effective, seen = 0, set()
    for p in trainable:
        group = copies.get(id(p))
        if group is None:
            effective += p.numel()
        elif id(group[0]) not in seen:
            seen.add(id(group[0]))
            mask = group[2]
            effective += int((mask != 0).any(0).sum()) if mask is not None else p.numel()
    return {"trainable": sum(p.numel() for p in trainable), "effective": effective,
            "total": sum(p.numel() for p in model.parameters())}
