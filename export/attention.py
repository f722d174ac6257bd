"""ModernBERT attention written for export: sliding-window layers block by block, global layers fused.

transformers' eager/sdpa ModernBERT builds an L x L mask and L x L scores in every layer, including the
sliding-window ones whose window is `local_attention` tokens. `efficient_attention(model, fused)` swaps each
attention module's forward, for the length of an export, for one that

- in the sliding-window layers cuts the queries into blocks of w = local_attention // 2 and lets each block
  attend to its own block and the two beside it (3w keys), masked to |i - j| <= w and to real tokens: memory
  and time grow linearly with the length;
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
    saved_mask = model._update_attention_mask
    # Hand the layers the (batch, length) 0/1 mask itself instead of the L x L masks built from it.
    model._update_attention_mask = lambda attention_mask, output_attentions=False: (attention_mask, attention_mask)
    for layer in layers:
        layer.forward = _forward_for(layer, fused_global, torch)
    try:
        yield
    finally:
        model._update_attention_mask = saved_mask
        for layer in layers:
            del layer.forward  # back to the class's method


def _forward_for(layer, fused_global: bool, torch):
    window = layer.local_attention[0] if layer.local_attention != (-1, -1) else None

    def forward(hidden_states, output_attentions=False, attention_mask=None, position_ids=None, **_unused):
        batch = hidden_states.shape[0]
        qkv = layer.Wqkv(hidden_states).view(batch, -1, 3, layer.num_heads, layer.head_dim)
        query, key, value = qkv.transpose(3, 1).unbind(dim=2)  # each (batch, heads, length, head_dim)
        cos, sin = layer.rotary_emb(qkv, position_ids=position_ids)
        query, key = _rotate(query, key, cos, sin, torch)
        valid = attention_mask.to(torch.bool)
        if window is not None:
            context = _sliding_window(query, key, value, valid, window, layer.head_dim ** -0.5, torch)
        elif fused_global:
            context = _fused_global(query, key, value, valid, layer.num_heads, layer.head_dim ** -0.5, torch)
        else:
            context = _plain_global(query, key, value, valid, layer.head_dim ** -0.5, torch)
        output = context.transpose(1, 2).reshape(batch, -1, layer.all_head_size)
        return (layer.out_drop(layer.Wo(output)),)

    return forward


def _rotate(query, key, cos, sin, torch):
    """RoPE as transformers applies it (rotate_half convention)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def half_turn(x):
        first, second = x.chunk(2, dim=-1)
        return torch.cat((-second, first), dim=-1)

    return query * cos + half_turn(query) * sin, key * cos + half_turn(key) * sin


def _softmax_attend(scores, value, torch):
    return torch.matmul(torch.softmax(scores.float(), dim=-1).to(value.dtype), value)


def _plain_global(query, key, value, valid, scale, torch):
    """Full attention with a (batch, 1, 1, L) key bias: the pattern backends fuse into their attention."""
    bias = (~valid).to(query.dtype)[:, None, None, :] * torch.finfo(query.dtype).min
    scores = torch.matmul(query, key.transpose(2, 3)) * scale + bias
    return _softmax_attend(scores, value, torch)


def _fused_global(query, key, value, valid, heads, scale, torch):
    """ONNX Runtime MultiHeadAttention (flash on CPU); padding rides in one extra query/key dimension."""
    batch, _, length, head_dim = query.shape
    ones = torch.ones_like(query[..., :1])
    padded = (~valid).to(key.dtype)[:, None, :, None].expand(-1, heads, -1, 1) * PADDED_KEY_SCORE
    query_plus = torch.cat([query, ones], dim=-1).transpose(1, 2).reshape(batch, length, heads * (head_dim + 1))
    key_plus = torch.cat([key, padded], dim=-1).transpose(1, 2).reshape(batch, length, heads * (head_dim + 1))
    value_flat = value.transpose(1, 2).reshape(batch, length, heads * head_dim)
    output = _multi_head_attention(torch).apply(query_plus, key_plus, value_flat, heads, scale)
    return output.reshape(batch, length, heads, head_dim).transpose(1, 2)


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


def _sliding_window(query, key, value, valid, window: int, scale, torch):
    """Each block of `window` queries attends to its block and both neighbours, masked to |i - j| <= window."""
    batch, heads, length, head_dim = query.shape
    blocks = (length + window - 1) // window
    padded_length = blocks * window
    # Pad by whole blocks (constant amounts, so the graph stays shape-generic), then cut to what is needed.
    query = torch.nn.functional.pad(query, (0, 0, 0, window))[:, :, :padded_length]
    query = query.reshape(batch, heads, blocks, window, head_dim)
    keys = _neighbourhoods(key, window, blocks, torch)  # (batch, heads, blocks, 3 window, head_dim)
    values = _neighbourhoods(value, window, blocks, torch)
    key_valid = _neighbourhoods(valid[:, None, :, None].to(query.dtype), window, blocks, torch) > 0.5
    offsets = torch.arange(3 * window)[None, :] - window - torch.arange(window)[:, None]  # key minus query
    allowed = (offsets.abs() <= window)[None, None, None] & key_valid.transpose(-1, -2)  # (b, 1, blocks, w, 3w)
    scores = torch.matmul(query, keys.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    context = _softmax_attend(scores, values, torch)
    return context.reshape(batch, heads, padded_length, head_dim)[:, :, :length]


def _neighbourhoods(tensor, window: int, blocks, torch):
    """(b, h, L, d) -> (b, h, blocks, 3 window, d): block k's rows from blocks k-1, k and k+1, zero outside."""
    batch, heads, _, depth = tensor.shape
    padded = torch.nn.functional.pad(tensor, (0, 0, window, 2 * window))[:, :, :(blocks + 2) * window]
    padded = padded.reshape(batch, heads, blocks + 2, window, depth)
    return torch.cat([padded[:, :, :-2], padded[:, :, 1:-1], padded[:, :, 2:]], dim=3)
