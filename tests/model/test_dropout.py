"""PCG64 dropout masks (train.dropout_rng: pcg64): dropout's maths with another random
stream, drawn reproducibly from torch's generator; a switched model keeps its weights and,
in eval mode, its outputs bit for bit."""
import copy

import torch
import torch.nn as nn

from kfusion.model.dropout import (PCG64Attention, PCG64Dropout, dropout, keep_mask,
                                   use_pcg64_dropout)
from kfusion.model.global_domain import IdentityDecoder


def test_keep_mask_keeps_one_minus_p_and_follows_torchs_seed():
    torch.manual_seed(3)
    mask = keep_mask(torch.Size([1000, 1000]), 0.1)
    after = torch.get_rng_state()
    # 1e6 Bernoulli(0.9) draws: sd of the mean 0.0003, so 0.9 +- 0.0015 is 5 sd
    assert mask.dtype == torch.bool and abs(mask.float().mean().item() - 0.9) < 0.0015
    torch.manual_seed(3)
    torch.randint(0, 2**62, ())   # the mask costs torch's generator exactly this one draw
    assert torch.equal(torch.get_rng_state(), after)
    torch.manual_seed(3)
    assert torch.equal(keep_mask(torch.Size([1000, 1000]), 0.1), mask)   # same seed, same mask
    assert not torch.equal(keep_mask(torch.Size([1000, 1000]), 0.1), mask)   # then new draws
    # rows are not copies of each other (a per-call seed, not a per-row one)
    assert not torch.equal(mask[0], mask[1])


def test_dropout_scales_the_kept_elements_and_zeroes_the_rest():
    x = torch.arange(1.0, 20001.0).view(100, 200)
    torch.manual_seed(5)
    y = dropout(x, 0.25)
    torch.manual_seed(5)
    kept = keep_mask(x.shape, 0.25)
    assert torch.equal(y == 0, ~kept)                      # x > 0: zero exactly where dropped
    torch.testing.assert_close(y[kept], x[kept] / 0.75)    # the rest scaled by 1 / (1 - p)
    assert torch.equal(dropout(x, 0.25, training=False), x) and torch.equal(dropout(x, 0.0), x)
    layer = PCG64Dropout(0.25)
    torch.manual_seed(5)
    assert torch.equal(layer(x), y)
    assert torch.equal(layer.eval()(x), x)


def _decoder() -> IdentityDecoder:
    torch.manual_seed(0)
    return IdentityDecoder(identity_dim=136, out_dim=136, n_tokens=12, token_offset_s=0.0,
                           d_model=16, n_heads=2, layers=1, ff_mult=2, dropout=1e-12,
                           local_attention_s=0.02)


def test_attention_computes_what_torchs_attention_computes():
    # p = 1e-12 keeps every element (threshold round(p * 2^32) = 0) and scales by 1: the
    # training path's attention must then equal torch's own (eval mode: no dropout), self-
    # and cross-attention, with the decoder's float locality bias as the mask
    stock = _decoder()
    ours = use_pcg64_dropout(copy.deepcopy(stock))
    assert isinstance(ours.decoder.layers[0].multihead_attn, PCG64Attention)
    identity, memory = torch.randn(3, 136), torch.randn(3, 20, 16)
    times = torch.arange(20) / 100.0
    want = stock.eval()(identity, memory, times)
    got = ours.train()(identity, memory, times)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_switched_model_keeps_its_weights_and_eval_outputs():
    stock = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, 0.1, batch_first=True,
                                                             norm_first=True), 2,
                                  enable_nested_tensor=False)
    ours = use_pcg64_dropout(copy.deepcopy(stock))
    kinds = {type(m) for m in ours.modules()}
    assert PCG64Dropout in kinds and PCG64Attention in kinds and nn.Dropout not in kinds
    assert list(ours.state_dict()) == list(stock.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(),
                                                 stock.state_dict().values()))
    x = torch.randn(4, 10, 16)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), stock.eval()(x))
    torch.manual_seed(1)
    first = ours.train()(x)
    torch.manual_seed(1)
    assert torch.equal(ours(x), first)                    # reproducible from torch's seed
    assert not torch.equal(ours(x), first)                # and new masks each call
