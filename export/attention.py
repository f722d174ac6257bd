"""ModernBERT written for export: sliding-window layers block by block, global layers fused, fewer copies.

transformers' eager/sdpa ModernBERT builds an L x L mask and L x L scores in every layer, including the
sliding-window ones whose window is `local_attention` tokens. `efficient_attention(model, onnxruntime_ops)`
swaps each attention module's forward, for the length of an export, for one that

- in the sliding-window layers cuts the queries into blocks of w = local_attention // 2 (one block of L
  when L < w) and lets each block attend to the keys of its window (the 3w around it, or all L when the
  text is shorter), masked to |i - j| <= w and to real tokens: memory and time grow linearly with the length;
- in the global layers either keeps plain MatMul/Softmax/MatMul with a key-padding bias
  (`onnxruntime_ops=False`; the OpenVINO CPU plugin fuses this into its own tiled attention), or emits
  ONNX Runtime's `com.microsoft.MultiHeadAttention` (`onnxruntime_ops=True`), whose CPU kernel is a flash
  attention when it gets no mask. Padding reaches it through one extra head dimension instead: queries get a
  1, keys get 0 for real tokens and a large negative number for padding, so padded keys score -inf-like and
  get no weight, and the kernel still takes its flash path.
  The OpenVINO graph keeps its additive key-padding bias on purpose. The same extra dimension there (queries
  scaled first, nothing between the product and the softmax) was a little faster per global layer. But
  OpenVINO 2026.4's f32 kernel for that pattern is wrong on every later call once its first call had a 1-token
  input (the one-text boundary test in tests/test_long_context.py caught it; docs/long-documents.md). A q8 IR
  on a CPU without bf16 runs that f32 kernel.

With `onnxruntime_ops=True` the graph also applies RoPE with `com.microsoft.RotaryEmbedding` (one pass
instead of rotate_half's Slice/Neg/Concat/Mul/Add) and computes Q, K and V as three MatMuls instead of one
MatMul and a Split. In both graphs the GeGLU input projection is two MatMuls instead of one and two Slices.
Measured on ModernBERT-base, 2 threads, 32 x 128 tokens: ONNX Runtime q8 1.24 s -> 1.10 s (rotary) -> 0.99 s
(split projections), fp32 2.35 -> 2.07 s; OpenVINO q8 1.12 -> 1.07 s (split GeGLU projection).

RoPE, scaling and the float32 softmax compute the model's own products; the results match the reference to
rounding.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

ATTENTION_MODES = ("efficient", "standard")
DEFAULT_ATTENTION = "efficient"
# Added to the score of a padded key through the extra head dimension: exp() of it is 0 in float32 and,
# clamped to -1e4 by an fp16 conversion, still 0 after scaling.
PADDED_KEY_SCORE = -1.0e9


@contextlib.contextmanager
def efficient_attention(model, onnxruntime_ops: bool) -> Iterator[None]:
    """Within the block, `model` (a transformers ModernBertModel) computes attention the efficient way.

    `onnxruntime_ops`: emit ONNX Runtime's contrib ops (a graph for ONNX Runtime only), else standard ops.
    """
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
        if onnxruntime_ops:
            global_mask = _key_padding_column(valid, heads, torch)
        else:
            global_mask = _key_padding_bias(valid, torch)
        return global_mask, _LocalWindows(valid, window, heads, torch)

    model._update_attention_mask = masks
    for layer in layers:
        layer.forward = _forward_for(layer, onnxruntime_ops, torch)
    mlps = [module for module in model.modules() if type(module).__name__ == "ModernBertMLP"]
    for mlp in mlps:
        mlp.forward = _mlp_forward_for(mlp, torch)
    try:
        yield
    finally:
        model._update_attention_mask = saved_masks
        for module in layers + mlps:
            del module.forward  # back to the class's method


def _forward_for(layer, onnxruntime_ops: bool, torch):
    from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb  # the model's own RoPE

    window = layer.local_attention[0] if layer.local_attention != (-1, -1) else None
    scale = layer.head_dim ** -0.5

    def forward(hidden_states, output_attentions=False, attention_mask=None, sliding_window_mask=None,
                position_ids=None, **_unused):
        batch = hidden_states.shape[0]
        if onnxruntime_ops:  # rotary in one op per tensor, in (batch, length, heads * head_dim)
            query, key, value = _split_linear(layer.Wqkv, hidden_states, 3, torch)
            cos, sin = layer.rotary_emb(query, position_ids=position_ids)  # (1, length, head_dim)
            half = layer.head_dim // 2
            cos, sin = cos[0, :, :half], sin[0, :, :half]
            rotate = _rotary_embedding(torch).apply
            query, key = rotate(query, cos, sin, layer.num_heads), rotate(key, cos, sin, layer.num_heads)
            query, key, value = (t.view(batch, -1, layer.num_heads, layer.head_dim) for t in (query, key, value))
            if window is None:  # no transposes
                output = _fused_global(query, key, value, attention_mask, layer.num_heads, scale, torch)
                return (layer.out_drop(layer.Wo(output)),)
            query, key, value = (t.transpose(1, 2) for t in (query, key, value))
        else:
            qkv = layer.Wqkv(hidden_states).view(batch, -1, 3, layer.num_heads, layer.head_dim)
            cos, sin = layer.rotary_emb(qkv, position_ids=position_ids)
            query, key, value = qkv.transpose(3, 1).unbind(dim=2)
            query, key = apply_rotary_pos_emb(query, key, cos, sin, unsqueeze_dim=1)
        # (batch, heads, length, head_dim) from here on
        if window is None:
            context = _softmax_attend(torch.matmul(query, key.transpose(2, 3)) * scale + attention_mask,
                                      value, torch)
        else:
            context = sliding_window_mask.attend(query, key, value, scale, layer.head_dim)
        output = context.transpose(1, 2).reshape(batch, -1, layer.all_head_size)
        return (layer.out_drop(layer.Wo(output)),)

    return forward


def _mlp_forward_for(mlp, torch):
    """ModernBERT's GeGLU with its input projection as two MatMuls (no Slice copies of the product)."""
    def forward(hidden_states):
        inputs, gate = _split_linear(mlp.Wi, hidden_states, 2, torch)
        return mlp.Wo(mlp.drop(mlp.act(inputs) * gate))

    return forward


def _split_linear(linear, x, parts: int, torch) -> list:
    """linear(x).chunk(parts, dim=-1), computed as one MatMul per block of weight rows.

    The weight slices are constants to the exporter, so each part gets its own initializer, and the graph
    has no Split/Slice copying the product (docs/notes/2026-12-06-figures-from-code.md).
    """
    weights = linear.weight.chunk(parts, dim=0)
    biases = linear.bias.chunk(parts) if linear.bias is not None else [None] * parts
    return [torch.nn.functional.linear(x, weight, bias) for weight, bias in zip(weights, biases)]


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


@functools.cache
def _multi_head_attention(torch):
    """An autograd Function that computes attention in PyTorch and exports as com.microsoft.MultiHeadAttention."""
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
            output = g.op("com.microsoft::MultiHeadAttention", query, key, value, num_heads_i=heads, scale_f=scale)
            output.setType(value.type())  # the context has the values' shape; torch cannot infer a contrib op's
            return output

    return MultiHeadAttention


@functools.cache
def _rotary_embedding(torch):
    """An autograd Function that applies ModernBERT's RoPE and exports as com.microsoft.RotaryEmbedding.

    x: (batch, length, heads * head_dim); cos/sin: (length, head_dim / 2), the model's own tables (whose two
    halves are equal). Same products as the model's q * cos + rotate_half(q) * sin, in one pass over x
    instead of the seven Slice/Neg/Concat/Mul/Add ops of rotate_half.
    """
    class RotaryEmbedding(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, cos, sin, heads: int):
            batch, length, hidden = x.shape
            first, second = x.view(batch, length, heads, -1).chunk(2, dim=-1)
            cos, sin = cos[None, :, None], sin[None, :, None]
            rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
            return rotated.reshape(batch, length, hidden)

        @staticmethod
        def symbolic(g, x, cos, sin, heads: int):
            start = g.op("Constant", value_t=torch.zeros(1, dtype=torch.int64))  # positions 0 .. L-1
            rotated = g.op("com.microsoft::RotaryEmbedding", x, start, cos, sin, num_heads_i=heads)
            rotated.setType(x.type())
            return rotated

    return RotaryEmbedding


class _LocalWindows:
    """The sliding-window layers' shared geometry, traced once per forward.

    Queries go in blocks of b = min(h, L) (h = local_attention // 2); each block attends to the K = min(3h, L)
    consecutive keys that hold its window, from its first query - h moved inside the text. Blocks and windows
    are cut with one Gather by positions computed here, so every key in a window is a real position and a text
    shorter than h is one block of its own length: short texts do the arithmetic of the standard L x L attention.
    The additive mask keeps |i - j| <= h and real tokens; the final slice drops the queries past the end of
    the last block. b and K come from the shapes of sliced position ranges, so the trace keeps them functions
    of L. Smaller blocks of queries and a fixed K = 3h were both slower (docs/notes/2026-12-06-figures-from-code.md).
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
