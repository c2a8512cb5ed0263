"""The attention reference against torch's scaled_dot_product_attention, and the rope table."""
import pytest
import torch
import torch.nn.functional as F

from kt.ops.attention import attention
from kt.ops.rope import Rope


@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("T,S", [(1, 9), (6, 6), (4, 13)])
def test_gqa_attention_matches_sdpa(T, S, window):
    g = torch.Generator().manual_seed(T * 100 + S)
    q = torch.randn(T, 6, 16, generator=g)
    k, v = torch.randn(S, 2, 16, generator=g), torch.randn(S, 2, 16, generator=g)
    q_pos, kv_pos = torch.arange(S - T, S), torch.arange(S)
    ours = attention(q, k, v, q_pos, kv_pos, scale=0.25, window=window)
    allowed = kv_pos[None, :] <= q_pos[:, None]
    if window:
        allowed &= (q_pos[:, None] - kv_pos[None, :]) < window
    ref = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1).repeat_interleave(3, 0),
                                         v.transpose(0, 1).repeat_interleave(3, 0), attn_mask=allowed, scale=0.25)
    torch.testing.assert_close(ours, ref.transpose(0, 1), rtol=1e-5, atol=1e-5)


def test_rope_table_equals_direct_formula():
    rope = Rope(dim=8, base=10000.0, interleaved=False, scale=0.5)
    positions = torch.tensor([0, 3, 1500, 7])
    cos, sin = rope.cos_sin(positions)
    inv_freq = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    angles = positions.double()[:, None] * 0.5 * inv_freq
    torch.testing.assert_close(cos, angles.cos().float())
    torch.testing.assert_close(sin, angles.sin().float())
