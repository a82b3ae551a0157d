"""Generation (task=math): the memory and time the training-step trace does not see.

Evaluation generates answers token by token (tasks/suites/math.py): PEFT's batches of 50, up to 300 new
tokens, at most 800 positions. Each new token reads every weight once, so decoding is bound by memory
bandwidth, not FLOPs: decode time = steps x (resident bytes + KV cache) / (bandwidth x MBU); the prompts'
prefill is compute, at the training MFU. Memory at generation = what stays resident through evaluation
(frozen weights, masks, adapters with their AdamW state: the trace's resident bytes) + the KV cache of a
full batch at the maximum length + the prefill's transient activations (the gated MLP of one layer at
batch x prompt, logits of the last position only, as transformers' generate asks for). Upper bounds:
every batch decodes all 300 tokens (a batch stops only when its last row has ended) and every prompt
is 500 tokens long (800 - 300).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from preflight import facts

GIB = 2**30


@dataclass(frozen=True)
class Generation:
    peak_bytes: int          # resident + KV cache + prefill transients
    seconds_valid: float     # one validation round
    seconds_test: float      # the test split, once
    rounds: int              # validation rounds

    @property
    def seconds(self) -> float:
        return self.rounds * self.seconds_valid + self.seconds_test


def estimate(spec: Any, config: Any, resident_bytes: int, forward_flops_per_token: float, precision: str,
             target_info: dict[str, Any], rounds: int) -> Generation:
    """``config``: the built model's transformers config; ``precision``: the matmuls' dtype."""
    from tasks.facts.math import PROTOCOL, TEST_ROWS

    g = facts.load("gpus")
    limit = spec.config["data"]["eval_limit"]
    n_valid, n_test = (min(n, limit) if limit else n for n in (PROTOCOL.valid_size, TEST_ROWS))
    batch = spec.config["trainer"]["eval_batch_size"] or spec.hparams["batch_size"]
    new, longest = PROTOCOL.max_new_tokens, PROTOCOL.max_length
    prompt = longest - new
    width = 2 if precision in ("bf16", "fp16") else 4
    layers = config.num_hidden_layers
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_bytes = 2 * layers * kv_heads * head_dim * width * min(batch, n_valid + n_test) * longest
    mlp = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    transient = 3 * batch * prompt * mlp * width + batch * config.vocab_size * 4
    bandwidth = target_info["bandwidth_gbs"] * 1e9 * g["mbu"]
    tflops = (target_info["tflops"].get(precision) or target_info["tflops"]["fp32"]) * 1e12 * g["mfu"]

    def seconds(n: int) -> float:
        batches = math.ceil(n / batch)
        prefill = n * prompt * forward_flops_per_token / tflops
        step_bytes = resident_bytes + kv_bytes / 2  # the cache grows from the prompt to 800 positions
        return prefill + batches * new * step_bytes / bandwidth

    return Generation(resident_bytes + kv_bytes + transient, seconds(n_valid), seconds(n_test), rounds)
