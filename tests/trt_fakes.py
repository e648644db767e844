"""A fake TensorRT engine's I/O description and profile, and a tokenizer-shaped feed: what the
pure TensorRT checks take, without a GPU or a model."""

from __future__ import annotations

import numpy as np

from quantgate.trt_shapes import Profile, ShapeRange, TensorSpec

PROFILE = Profile(ShapeRange(1, 8, 32, "batch"), ShapeRange(8, 64, 128, "seq_len"))
# An engine whose tensors are declared in an order unlike the tokenizer's, with mixed dtypes.
SPECS = [
    TensorSpec("logits", "output", "float32", (-1, 9)),
    TensorSpec("token_type_ids", "input", "int32", (-1, -1)),
    TensorSpec("input_ids", "input", "int32", (-1, -1)),
    TensorSpec("attention_mask", "input", "int64", (-1, -1)),
]


def fake_feed(batch=2, seq=10, vocab=30000):
    """Random token ids, a full attention mask and zero token types, int64 as the pyfunc encodes."""
    rng = np.random.default_rng(0)
    return {  # the tokenizer's order
        "input_ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
    }
