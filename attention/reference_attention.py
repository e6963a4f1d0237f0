"""Reference attention in the denoiser's attn1: queries from its own tokens, keys/values over [own tokens | reference tokens].

Equivalent to the originals' attn1 over cat([n, g]) (2N tokens) keeping the first N outputs (docs/idm_vton.md,
"Reference attention"). Each ComfyUI call lists its chunks in `extra_options["cond_or_uncond"]` (0 = cond,
1 = uncond, any order, uncond absent at cfg 1.0); every chunk gets the reference tokens of its kind from the bank:
cond features, uncond features (materialised), or zero tokens. Two ways to install it:

- `ReferenceAttentionReplace` (attn1 replace, one per block): projects the reference keys/values once per call;
  zero tokens become one key `to_k(0)` with logit bias log(M), exactly the softmax weight of M zero tokens.
- `ReferenceAttentionPatch` (attn1_patch): concatenates the reference tokens (zeros materialised) before the
  projections, so it works on top of another node's attn1 replace.
"""

from __future__ import annotations

import functools
import math

import comfy.ldm.modules.attention as comfy_attention
import torch

from .shared_state_patch import SharedStatePatch


def expand_to_batch(tensor: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """Broadcasts a batch of 1 to `batch`; a batch already equal passes through."""
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ValueError(f"{what}: batch {tensor.shape[0]} cannot serve a batch of {batch}")


def reference_context(
    n: torch.Tensor, cond_features: torch.Tensor, cond_or_uncond: list[int], strength: float = 1.0, uncond_features: torch.Tensor | None = None
) -> torch.Tensor:
    """cat([n, r]) along tokens, r = cond features for cond chunks, uncond features (zeros when None) for uncond chunks.

    `n` is (chunks * B, N, C) with chunks = len(cond_or_uncond); the features are (1 or B, M, C).
    Zeros for uncond stay: they take softmax mass (logit 0) exactly as the original's zero features do.
    """
    chunks = len(cond_or_uncond)
    batch = n.shape[0] // chunks
    cond = expand_to_batch(cond_features.to(n), batch, "reference features") * strength
    uncond = torch.zeros_like(cond) if uncond_features is None else expand_to_batch(uncond_features.to(n), batch, "uncond reference features") * strength
    extra = torch.cat([cond if kind == 0 else uncond for kind in cond_or_uncond], dim=0)
    return torch.cat([n, extra], dim=1)


def block_key(extra_options: dict):
    return (extra_options["block"][0], extra_options["block"][1], extra_options["block_index"])


class ReferenceAttentionPatch(SharedStatePatch):
    """ComfyUI `attn1_patch` for every block: keys/values over cat([n, r]), r materialised (zeros included)."""

    def __init__(self, bank):
        super().__init__(bank)
        self.bank = bank

    def __call__(self, n, context_attn1, value_attn1, extra_options):
        features = self.bank.features_for(block_key(extra_options))
        if features is None:
            return n, context_attn1, value_attn1
        cond_or_uncond = extra_options.get("cond_or_uncond") or [0]
        strength = self.bank.spec.strength

        def extended(tokens):
            return reference_context(tokens, features.cond, cond_or_uncond, strength, features.uncond)

        context = extended(context_attn1)
        value = context if value_attn1 is context_attn1 else extended(value_attn1)
        return n, context, value


@functools.lru_cache(maxsize=64)
def zero_key_biases(count: int, dtype: torch.dtype) -> tuple[float, ...]:
    """Additive logits b_j, each exactly representable in `dtype`, with sum(exp(b_j)) == count (to 2e-6 relative).

    `count` identical keys weigh as much in a softmax as one of them with logit bias log(count). In fp32 one
    bias is exact; in fp16/bf16 log(count) rounds coarsely (bf16: ~6% of count at 3072), so the remainder
    goes to a second (third...) copy of the key with its own bias.
    """
    biases: list[float] = []
    remaining = float(count)
    while remaining > count * 2e-6 and len(biases) < 4:
        exact = torch.tensor(math.log(remaining), dtype=torch.float64)
        bias = exact.to(dtype)
        if float(bias) > float(exact):  # round down, so that the remainder stays >= 0
            bias = torch.nextafter(bias, torch.tensor(-math.inf, dtype=dtype))
        biases.append(float(bias))
        remaining -= math.exp(float(bias))
    return tuple(biases)  # cached: called for every block and step with the same few (count, dtype)


class ReferenceAttentionReplace(SharedStatePatch):
    """ComfyUI attn1 replace for one block: each chunk attends over [its keys | the reference keys of its kind].

    Reference keys/values are projected once per call and kind (not per chunk). Zero tokens (IDM-VTON's uncond)
    are one key k0 = to_k(0) (value to_v(0)) with logit bias log(M): exactly softmax over M materialised zeros.
    """

    def __init__(self, bank, key, attn1):
        super().__init__(bank)
        self.bank = bank
        self.key = key
        self.attn1 = attn1

    def _projected(self, features: torch.Tensor, batch: int, like: torch.Tensor):
        tokens = features.to(like) * self.bank.spec.strength
        return expand_to_batch(self.attn1.to_k(tokens), batch, "reference features"), expand_to_batch(self.attn1.to_v(tokens), batch, "reference features")

    def _zero_key(self, tokens: int, batch: int, q: torch.Tensor, own_keys: int):
        zero = q.new_zeros(1, 1, self.attn1.to_k.in_features)
        biases = zero_key_biases(tokens, q.dtype)
        mask = torch.zeros(1, 1, own_keys + len(biases), dtype=q.dtype, device=q.device)
        mask[..., own_keys:] = torch.tensor(biases, dtype=q.dtype)
        return self.attn1.to_k(zero).expand(batch, len(biases), -1), self.attn1.to_v(zero).expand(batch, len(biases), -1), mask

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")
        features = self.bank.features_for(self.key)
        if features is None:
            return comfy_attention.optimized_attention(q, k, v, heads, attn_precision=precision)
        cond_or_uncond = extra_options.get("cond_or_uncond") or [0]
        batch = q.shape[0] // len(cond_or_uncond)
        outs = []
        projected: dict[int, tuple] = {}
        for chunk, kind in enumerate(cond_or_uncond):
            rows = slice(chunk * batch, (chunk + 1) * batch)
            reference = features.cond if kind == 0 else features.uncond
            if kind not in projected:
                if reference is None:  # zero tokens
                    projected[kind] = self._zero_key(features.cond.shape[1], batch, q, k.shape[1])
                else:
                    projected[kind] = (*self._projected(reference, batch, q), None)
            ref_k, ref_v, mask = projected[kind]
            keys, values = torch.cat([k[rows], ref_k], dim=1), torch.cat([v[rows], ref_v], dim=1)
            if mask is None:
                outs.append(comfy_attention.optimized_attention(q[rows], keys, values, heads, attn_precision=precision))
            else:
                outs.append(comfy_attention.optimized_attention_masked(q[rows], keys, values, heads, mask=mask, attn_precision=precision))
        return torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]
