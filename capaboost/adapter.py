"""CapaBoost bottleneck: sum_i (W_up * M^up_i) act((W_down * M^down_i) x + b_down) + b_up.

Used twice: as the Pfeiffer adapter after each layer's FFN output (ReLU), and as the
prefix-tuning reparameterisation MLP (tanh). Masks cover the two weight matrices only;
the biases are unmasked and shared by the d branches, so, as in the official sum of d
``up_i(relu(down_i(x)))``, the up bias enters d times. The official code keeps only copy 0's
bias gradient (a quirk); here plain autograd sums the branches' bias gradients.
"""
from __future__ import annotations

import torch
from torch import nn

from .branches import project_in, stack_in, stack_out


class MaskedBottleneck(nn.Module):
    def __init__(self, in_features: int, width: int, out_features: int, mask_down: torch.Tensor,
                 mask_up: torch.Tensor, activation: nn.Module, init_std: float = 0.02) -> None:
        super().__init__()
        d = mask_down.shape[0]
        if mask_down.shape != (d, width, in_features) or mask_up.shape != (d, out_features, width):
            raise ValueError(f"mask shapes {tuple(mask_down.shape)}, {tuple(mask_up.shape)} do not fit "
                             f"{in_features}->{width}->{out_features} with d={d}")
        self.d = d
        self.down_weight = nn.Parameter(torch.randn(width, in_features) * init_std)  # "bert" init
        self.down_bias = nn.Parameter(torch.zeros(width))
        self.up_weight = nn.Parameter(torch.randn(out_features, width) * init_std)
        self.up_bias = nn.Parameter(torch.zeros(out_features))
        self.activation = activation
        self.register_buffer("mask_down", mask_down, persistent=False)
        self.register_buffer("mask_up", mask_up, persistent=False)

    @classmethod
    def from_linears(cls, down: nn.Linear, up: nn.Linear, mask_down: torch.Tensor,
                     mask_up: torch.Tensor, activation: nn.Module) -> MaskedBottleneck:
        """Take over two existing Linears' weights (e.g. PEFT's prefix MLP)."""
        module = cls(down.in_features, down.out_features, up.out_features, mask_down, mask_up, activation)
        with torch.no_grad():
            for mine, theirs in [(module.down_weight, down.weight), (module.down_bias, down.bias),
                                 (module.up_weight, up.weight), (module.up_bias, up.bias)]:
                mine.copy_(theirs)
        return module.to(down.weight.device)

    def masked_parameters(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        return [(self.down_weight, self.mask_down), (self.up_weight, self.mask_up)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # like LoRA (and PEFT), the adapter keeps its own dtype inside a bf16/fp64 backbone
        down = stack_in(self.down_weight, self.mask_down)
        z = self.activation(project_in(x.to(down.dtype), down, self.d) + self.down_bias.repeat(self.d))
        return (z @ stack_out(self.up_weight, self.mask_up).T + self.d * self.up_bias).to(x.dtype)


class PfeifferOutput(nn.Module):
    """A BERT-style FFN output (dense, dropout, LayerNorm) with a Pfeiffer adapter.

    adapter-transformers' PfeifferConfig (original_ln_before, original_ln_after,
    residual_before_ln): with h = dropout(dense(x)) and r the layer's residual input,
    out = LN(h + adapter(LN(h + r)) + r). Serves RoBERTa, BERT and DeBERTa-v2/v3.
    """

    def __init__(self, base_layer: nn.Module, adapter: MaskedBottleneck) -> None:
        super().__init__()
        self.base_layer, self.adapter = base_layer, adapter

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        h = base.dropout(base.dense(hidden_states))
        return base.LayerNorm(h + self.adapter(base.LayerNorm(h + input_tensor)) + input_tensor)


class PfeifferMlp(nn.Module):
    """Pre-LN blocks (timm ViT): the adapter acts on the MLP output, h + adapter(h),
    before the block's own residual add."""

    def __init__(self, base_layer: nn.Module, adapter: MaskedBottleneck) -> None:
        super().__init__()
        self.base_layer, self.adapter = base_layer, adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        return h + self.adapter(h)
