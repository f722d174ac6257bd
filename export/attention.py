"""ModernBERT attention written for export: sliding-window layers block by block, global layers fused.

transformers' eager/sdpa ModernBERT builds an L x L mask and L x L scores in every layer, including the
sliding-window ones whose window is `local_attention` tokens. `efficient_attention(model, fused)` swaps each
attention module's forward, for the length of an export, for one that

- in the sliding-window layers cuts the queries into blocks of w = local_attention // 2 (one block of L
  when L < w) and lets each block attend to the keys of its window (the 3w around it, or all L when the
  text is shorter), masked to |i - j| <= w and to real tokens: memory and time grow linearly with the length;
- in the global layers either keeps plain MatMul/Softmax/MatMul with a key-padding bias (`fused=False`; the
  OpenVINO CPU plugin fuses this into its own tiled attention), or emits ONNX Runtime's
  `com.microsoft.MultiHeadAttention` (`fused=True`), whose CPU kernel is a flash attention when it gets no mask.
  Padding reaches it through one extra head dimension instead: queries get a 1, keys get 0 for real tokens and
  a large negative number for padding, so padded keys score -inf-like and get no weight, and the kernel still
  takes its flash path.

RoPE, scaling and the float32 softmax are the model's own; the results match the reference to rounding.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

ATTENTION_MODES = ("efficient", "standard")
DEFAULT_ATTENTION = "efficient"
# Added to the score of a padded key through the extra head dimension: exp() of it is 0 in float32 and,
# clamped to -1e4 by an fp16 conversion, still 0 after scaling.
PADDED_KEY_SCORE = -1.0e9


@contextlib.contextmanager
def efficient_attention(model, fused_global: bool) -> Iterator[None]:
    """Within the block, `model` (a transformers ModernBertModel) computes attention the efficient way."""
    import torch

    layers = [module for module in model.modules() if type(module).__name__ == "ModernBertAttention"]
    if not layers or not hasattr(model, "_update_attention_mask"):
        raise TypeError(f"{type(model).__name__} has no ModernBERT attention to rewrite")
    config = model.config
    window = config.local_attention // 2
    heads = config.num_attention_heads
    saved_masks = model._update_attention_mask

    def masks(attention_mask, output_attentions=False):
        """Built once per call and shared by the layers, in place of the L x L masks transformers builds."""
        valid = attention_mask.to(torch.bool)
        if fused_global:
            global_mask = _key_padding_column(valid, heads, torch)
        else:
            global_mask = _key_padding_bias(valid, torch)
        return global_mask, _LocalWindows(valid, window, heads, torch)

    model._update_attention_mask = masks
    for layer in layers:
        layer.forward = _forward_for(layer, fused_global, torch)
    try:
        yield
    finally:
        model._update_attention_mask = saved_masks
        for layer in layers:
            del layer.forward  # back to the class's method


def _forward_for(layer, fused_global: bool, torch):
    from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb  # the model's own RoPE

    window = layer.local_attention[0] if layer.local_attention != (-1, -1) else None
    scale = layer.head_dim ** -0.5

    def forward(hidden_states, output_attentions=False, attention_mask=None, sliding_window_mask=None,
                position_ids=None, **_unused):
        batch = hidden_states.shape[0]
        qkv = layer.Wqkv(hidden_states).view(batch, -1, 3, layer.num_heads, layer.head_dim)
        cos, sin = layer.rotary_emb(qkv, position_ids=position_ids)  # (1, length, head_dim)
        if window is None and fused_global:  # stays in (batch, length, heads, head_dim): no transposes
            query, key, value = qkv.unbind(dim=2)
            query, key = apply_rotary_pos_emb(query, key, cos, sin, unsqueeze_dim=2)
            output = _fused_global(query, key, value, attention_mask, layer.num_heads, scale, torch)
        else:
            query, key, value = qkv.transpose(3, 1).unbind(dim=2)  # (batch, heads, length, head_dim)
            query, key = apply_rotary_pos_emb(query, key, cos, sin, unsqueeze_dim=1)
            if window is None:
                context = _softmax_attend(torch.matmul(query, key.transpose(2, 3)) * scale + attention_mask,
                                          value, torch)
            else:
                context = sliding_window_mask.attend(query, key, value, scale, layer.head_dim)
            output = context.transpose(1, 2).reshape(batch, -1, layer.all_head_size)
        return (layer.out_drop(layer.Wo(output)),)

    return forward


def _softmax_attend(scores, value, torch):
    return torch.matmul(torch.softmax(scores.float(), dim=-1).to(value.dtype), value)


def _key_padding_bias(valid, torch):
    """(batch, 1, 1, L): 0 for real keys, float32 min for padding, added to the global layers' scores."""
    return (~valid).float()[:, None, None, :] * torch.finfo(torch.float32).min


def _key_padding_column(valid, heads: int, torch):
    """(batch, L, heads, 1): the extra key dimension of the fused global layers (0 real, PADDED_KEY_SCORE pad)."""
    return ((~valid).float() * PADDED_KEY_SCORE)[:, :, None, None].expand(-1, -1, heads, 1)


def _fused_global(query, key, value, padding_column, heads: int, scale: float, torch):
    """ONNX Runtime MultiHeadAttention (flash on CPU); padding rides in one extra query/key dimension.

    query/key/value: (batch, length, heads, head_dim); returns (batch, length, heads * head_dim).
    """
    batch, length, _, head_dim = query.shape
    query_plus = torch.cat([query, torch.ones_like(padding_column)], dim=-1).reshape(batch, length, -1)
    key_plus = torch.cat([key, padding_column], dim=-1).reshape(batch, length, -1)
    return _multi_head_attention(torch).apply(query_plus, key_plus, value.reshape(batch, length, -1), heads, scale)


_FUNCTION = None


def _multi_head_attention(torch):
    """An autograd Function that computes attention in PyTorch and exports as com.microsoft.MultiHeadAttention."""
    global _FUNCTION
    if _FUNCTION is None:
        class MultiHeadAttention(torch.autograd.Function):
            @staticmethod
            def forward(ctx, query, key, value, heads: int, scale: float):
                batch, length, _ = query.shape
                q = query.reshape(batch, length, heads, -1).transpose(1, 2)
                k = key.reshape(batch, length, heads, -1).transpose(1, 2)
                v = value.reshape(batch, length, heads, -1).transpose(1, 2)
                out = _softmax_attend(torch.matmul(q, k.transpose(2, 3)) * scale, v, torch)
                return out.transpose(1, 2).reshape(batch, length, -1)

            @staticmethod
            def symbolic(g, query, key, value, heads: int, scale: float):
                return g.op("com.microsoft::MultiHeadAttention", query, key, value, num_heads_i=heads, scale_f=scale)

        _FUNCTION = MultiHeadAttention
    return _FUNCTION


class _LocalWindows:
    """The sliding-window layers' shared geometry, traced once per forward.

    Queries go in blocks of b = min(h, L) (h = local_attention // 2); each block attends to the K = min(3h, L)
    consecutive keys that hold its window, from its first query - h moved inside the text. Blocks and windows
    are cut with one Gather by positions computed here, so every key in a window is a real position and a text
    shorter than h is one block of its own length: short texts do the arithmetic of the standard L x L attention.
    The additive mask keeps |i - j| <= h and real tokens; the final slice drops the queries past the end of
    the last block. b and K come from the shapes of sliced position ranges, so the trace keeps them functions
    of L. Measured on ModernBERT-base (fp32, 2 threads): blocks of 16 or 32 queries (fewer wasted keys, more
    small MatMuls) were 2-8% slower at 512-2048 tokens; a fixed K = 3h made 16-token texts 5-10% slower.
    """

    def __init__(self, valid, window: int, heads: int, torch) -> None:
        self.torch, self.heads = torch, heads
        self.batch, self.length = valid.shape[0], valid.shape[1]
        positions = torch.arange(self.length)
        block_offsets, key_offsets = positions[:window], positions[:3 * window]  # b and K positions
        self.block, keys = block_offsets.shape[0], key_offsets.shape[0]
        blocks = (self.length + self.block - 1) // self.block
        self.padded_length = blocks * self.block
        starts = torch.arange(blocks)[:, None] * self.block
        query_positions = starts + block_offsets[None, :]  # (blocks, b)
        self.query_index = torch.clamp(query_positions, max=self.length - 1).reshape(-1)
        first_key = torch.clamp(torch.clamp(starts - window, min=0), max=self.length - keys)
        key_positions = first_key + key_offsets[None, :]  # (blocks, K), all inside the text
        self.key_index = key_positions.reshape(-1)
        key_valid = valid.index_select(1, self.key_index).reshape(self.batch, blocks, keys)
        near = (key_positions[:, None, :] - query_positions[:, :, None]).abs() <= window  # (blocks, b, K)
        allowed = near[None] & key_valid[:, :, None, :]  # (batch, blocks, b, K)
        bias = (~allowed).float() * torch.finfo(torch.float32).min
        # One copy per head, laid out as the scores are: (batch * heads * blocks, b, K).
        self.bias = bias[:, None].expand(-1, heads, -1, -1, -1).reshape(-1, self.block, keys)

    def attend(self, query, key, value, scale: float, head_dim: int):
        """Attention of (batch, heads, L, head_dim) inputs, context in the same layout."""
        torch = self.torch
        queries = query.index_select(2, self.query_index).reshape(-1, self.block, head_dim)
        keys = key.index_select(2, self.key_index).reshape(queries.shape[0], -1, head_dim)
        values = value.index_select(2, self.key_index).reshape(queries.shape[0], -1, head_dim)
        context = _softmax_attend(torch.matmul(queries, keys.transpose(1, 2)) * scale + self.bias, values, torch)
        return context.reshape(self.batch, self.heads, self.padded_length, head_dim)[:, :, :self.length]
