"""Wiring of the whole model: shapes for every switch, what each switch removes, the mouth
path of Eq. 11, determinism, the loss, and that it can learn (overfit 8 windows)."""
import copy
import itertools
import math
import time

import pytest
import torch

from kfusion.config import Config, ConfigError, from_dict, to_dict
from kfusion.shapes import MOUTH_INDICES
from kfusion.device import resolve_device
from kfusion.model.build import build_model as build_for, parameter_counts
from kfusion.model.loss import from_unit, landmark_loss, to_unit

MOUTH = list(MOUTH_INDICES)
NON_MOUTH = [i for i in range(68) if i not in MOUTH]


W2V = {"encoder": "wav2vec2", "feature_dim": 768}   # the fields of a record the model reads


def build_model(cfg: Config, encoder: dict = W2V):
    """The model for wav2vec2's features (49 tokens x 768 per 1 s window) unless told."""
    return build_for(cfg, encoder)


def tiny_cfg(**model) -> Config:
    """Small sizes so each forward takes milliseconds; the wiring is what is tested."""
    m = dict(d_model=16, n_heads=2, lstm_hidden=8, fusion_channels=4, dropout=0.0,
             kan={"hidden": [8]})
    m.update(model)
    return from_dict({"device": "cpu", "model": m})


def make_batch(b: int = 2, seed: int = 0, n_mels: int = 80) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"mel": torch.randn(b, 100, n_mels, generator=g),
            "w2v": torch.randn(b, 49, 768, generator=g).half(),  # as windows stores it
            "identity": 100 + 60 * torch.rand(b, 68, 2, generator=g),
            "emotion": torch.randint(0, 8, (b,), generator=g)}


def head_input(model, batch) -> torch.Tensor:
    """x'_f of Eq. 11, what KFusion's head reads."""
    seen = {}
    hook = model.kfusion.head.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    try:
        with torch.no_grad():
            model(batch)
    finally:
        hook.remove()
    return seen["x"]  # (B, 30, 2, 68)


def perturb_(module: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)


def test_the_window_comes_from_the_config():
    default = build_model(tiny_cfg())
    assert (default.n_frames, default.n_tokens, default.n_mels) == (30, 49, 80)
    assert default.global_domain.encoder.rate_hz == 100.0  # 16 kHz / hop 160
    # a 2 s window (60 frames at 30 fps) of 40 mel bins at 50 frames/s (hop 320)
    cfg = from_dict({"device": "cpu", "windows": {"frames": 60},
                     "features": {"n_mels": 40, "hop_length": 320},
                     "model": to_dict(tiny_cfg().model)})
    model = build_model(cfg).eval()
    assert (model.n_frames, model.n_tokens, model.n_mels) == (60, 99, 40)
    assert model.global_domain.encoder.rate_hz == 50.0
    g = torch.Generator().manual_seed(0)
    batch = {"mel": torch.randn(2, 100, 40, generator=g), "w2v": torch.randn(2, 99, 768, generator=g),
             "identity": 100 + 60 * torch.rand(2, 68, 2, generator=g), "emotion": torch.tensor([0, 1])}
    with torch.no_grad():
        assert model(batch).shape == (2, 60, 68, 2)


@pytest.mark.parametrize("encoder,width,tokens,offset_s", [
    ("wav2vec2", 768, 49, 0.0125), ("random", 768, 49, 0.0125),
    ("whisper", 384, 50, 0.0), ("ppg", 191, 51, 0.0)])
def test_the_content_input_follows_the_encoder(encoder, width, tokens, offset_s):
    # the width comes from the record (features' metadata), the tokens from the frame rule
    model = build_model(tiny_cfg(), {"encoder": encoder, "feature_dim": width}).eval()
    assert (model.n_tokens, model.content_dim) == (tokens, width)
    assert model.content_domain.proj.in_features == width
    assert model.content_domain.emotion.weight.shape == (8, width)
    assert model.content_domain.encoder.offset_s == offset_s
    assert model.global_domain.face.token_offset_s == offset_s
    batch = make_batch()
    batch["w2v"] = torch.randn(2, tokens, width)
    with torch.no_grad():
        assert model(batch).shape == (2, 30, 68, 2)
    batch["w2v"] = torch.randn(2, 49 if tokens != 49 else 50, width)   # another encoder's tokens
    with pytest.raises(ValueError, match="model input 'w2v'"):
        model(batch)


SWITCHES = list(itertools.product(["kan", "mlp", "none"], [True, False], [True, False],
                                  ["mel", "wav2vec2"]))


@pytest.mark.parametrize("fusion,global_domain,lstm,global_input", SWITCHES)
def test_output_shape_every_switch(fusion, global_domain, lstm, global_input):
    cfg = tiny_cfg(fusion=fusion, global_domain=global_domain, lstm=lstm,
                   global_input=global_input)
    model = build_model(cfg).eval()
    y = model(make_batch(3))
    assert y.shape == (3, 30, 68, 2) and y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("target", ["offset", "absolute"])
def test_target_switch_output_in_crop_px(target):
    model = build_model(tiny_cfg(target=target)).eval()
    batch = make_batch(2)
    # zero the head's last layer: the model then predicts 0 in unit coordinates, i.e.
    # the identity itself (offset) or the centre of the [56, 243] box (absolute)
    with torch.no_grad():
        for p in model.kfusion.head.layers[-1].parameters():
            p.zero_()
        y = model(batch)
    if target == "offset":
        want = batch["identity"][:, None].expand(-1, 30, -1, -1)
    else:
        want = torch.full_like(y, (56.0 + 243.0) / 2)
    torch.testing.assert_close(y, want, rtol=0, atol=1e-4)


def test_unit_coordinates_hand_computed():
    mcfg = Config().model  # bounds 56, 243: centre 149.5, half-width 93.5
    px = torch.tensor([56.0, 243.0, 149.5, 196.25])
    torch.testing.assert_close(to_unit(px, mcfg), torch.tensor([-1.0, 1.0, 0.0, 0.5]))
    torch.testing.assert_close(from_unit(to_unit(px, mcfg), mcfg), px)


def test_loss_hand_computed():
    mcfg = Config().model
    target = torch.full((1, 2, 68, 2), 149.5)
    pred = target.clone()
    pred[..., 0] += 93.5  # every point off by one unit in x: squared error 1 per x coordinate
    pred[:, :, MOUTH, 1] += 2 * 93.5  # mouth points also 2 units off in y: 4
    # all: (68*1 + 20*4) / (68*2) ; mouth: (20*1 + 20*4) / (20*2)
    want = 0.2 * (68 + 80) / 136 + 0.8 * (20 + 80) / 40
    got = landmark_loss(pred, target, 0.8, mcfg)
    assert math.isclose(got.item(), want, rel_tol=1e-6)


def test_mouth_branch_reaches_only_mouth_indices_before_head():
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).eval()
    batch = make_batch(2)
    base = head_input(model, batch)
    for block in ("content_domain.mouth_lstm", "content_domain.mouth_out",
                  "global_domain.mouth"):
        m = copy.deepcopy(model)
        perturb_(m.get_submodule(block))
        diff = (head_input(m, batch) - base).abs()
        assert diff[..., NON_MOUTH].max() == 0, block
        assert diff[..., MOUTH].min() > 0, block
    # and the face branches never reach the mouth indices (Eq. 11 overwrites them)
    for block in ("content_domain.face_lstm", "global_domain.face", "content_domain.decoder"):
        m = copy.deepcopy(model)
        perturb_(m.get_submodule(block))
        diff = (head_input(m, batch) - base).abs()
        assert diff[..., MOUTH].max() == 0, block
        assert diff[..., NON_MOUTH].max() > 0, block


def shapes(model) -> dict[str, tuple]:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def test_switching_off_removes_exactly_that_blocks_parameters():
    full = build_model(tiny_cfg())
    # tokens are resampled to the frames before KFusion (token_to_frame: interpolate), so
    # each branch is n_frames channels of the k=1 convs
    n_tok, ch, n_frames = 30, 4, 30
    first_convs = {"kfusion.face_bottleneck.0.weight", "kfusion.face_gate.weight",
                   "kfusion.mouth_bottleneck.0.weight"}
    # each removed branch removes its block and n_tok input channels of the k=1 convs that
    # read the stacked tokens (face B: ch outputs, gate: n_frames, mouth B: ch)
    cases = {"global_domain": ("global_domain.", ["global_domain"]),
             "lstm": ("content_domain.", ["face_lstm", "face_out", "mouth_lstm", "mouth_out"])}
    for switch, (prefix, blocks) in cases.items():
        off = build_model(tiny_cfg(**{switch: False}))
        a, b = shapes(full), shapes(off)
        gone = set(a) - set(b)
        assert gone and set(b) <= set(a)
        assert all(any(n.startswith(prefix + blk + ".") or n.startswith(blk + ".")
                       for blk in blocks) for n in gone), sorted(gone)
        removed = sum(math.prod(a[n]) for n in gone)
        block_params = sum(sum(p.numel() for p in full.get_submodule(
            blk if blk == "global_domain" else prefix + blk).parameters()) for blk in blocks)
        assert removed == block_params
        changed = {n for n in b if a[n] != b[n]}
        assert changed == first_convs
        for n in changed:
            assert a[n][1] - b[n][1] == n_tok and a[n][0] == b[n][0]
        total = sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in off.parameters())
        assert total == block_params + n_tok * (ch + n_frames + ch)
    # kan -> mlp: only the head changes; about the same size
    mlp = build_model(tiny_cfg(fusion="mlp"))
    a, b = shapes(full), shapes(mlp)
    assert {n for n in set(a) ^ set(b)} <= {n for n in set(a) | set(b)
                                            if n.startswith("kfusion.head.")}
    ca, cb = parameter_counts(full)["kfusion.head"], parameter_counts(mlp)["kfusion.head"]
    assert abs(ca - cb) / ca < 0.05
    # fusion none: no bottleneck, gate or head at all
    none = build_model(tiny_cfg(fusion="none"))
    fusion_names = {n for n in shapes(none) if n.startswith("kfusion.")}
    assert fusion_names == {"kfusion.features.weight", "kfusion.features.bias",
                            "kfusion.time.weight", "kfusion.time.bias"}


def test_fixed_seed_identical_and_global_rng_untouched():
    torch.manual_seed(123)
    expect_next = torch.rand(3)
    torch.manual_seed(123)
    m1 = build_model(tiny_cfg())
    assert torch.equal(torch.rand(3), expect_next)  # building did not consume the global RNG
    m2 = build_model(tiny_cfg())
    for (n, p), (_, q) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(p, q), n
    batch = make_batch(2)
    torch.manual_seed(7)
    y1 = m1.train()(batch)  # dropout from the global RNG: same seed, same masks
    torch.manual_seed(7)
    y2 = m2.train()(batch)
    assert torch.equal(y1, y2)
    other = build_model(from_dict({"device": "cpu", "seed": 5, "model": tiny_cfg().model.__dict__
                                   | {"kan": {"hidden": [8]}}}))
    assert not torch.equal(other.eval()(batch), m1.eval()(batch))


def test_device_from_config():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")


def test_runs_under_autocast_and_backward():
    model = build_model(tiny_cfg())
    batch = make_batch(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(batch)
        loss = landmark_loss(y, batch["identity"][:, None].expand(-1, 30, -1, -1), 0.8,
                             model.mcfg)
    loss.backward()
    assert y.shape == (2, 30, 68, 2) and torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_bad_batch_names_key_and_shape():
    model = build_model(tiny_cfg())
    batch = make_batch(2)
    with pytest.raises(ValueError, match="'w2v'.*expected"):
        model(batch | {"w2v": torch.zeros(2, 50, 768)})
    with pytest.raises(KeyError, match="mel"):
        model({k: v for k, v in batch.items() if k != "mel"})


def structured_windows(n: int = 8, seed: int = 0) -> tuple[dict, torch.Tensor]:
    """Random but learnable: the mouth opens with the energy of the mel frames, shifted by
    an emotion-dependent amount; the identity is a jittered template face."""
    g = torch.Generator().manual_seed(seed)
    template = 110 + 80 * torch.rand(68, 2, generator=g)
    identity = template + 3 * torch.randn(n, 68, 2, generator=g)
    mel = torch.randn(n, 100, 80, generator=g)
    energy = torch.nn.functional.interpolate(mel.mean(-1)[:, None], size=30, mode="linear")[:, 0]
    emotion = torch.arange(n) % 8
    target = identity[:, None].repeat(1, 30, 1, 1)
    # mouth opens with the energy (about +-10 px), emotion shifts the mouth corners
    target[:, :, MOUTH, 1] += 100 * energy[:, :, None]
    target[:, :, [48, 54], 0] += torch.tensor([-1.0, 1.0]) * 2 * emotion[:, None, None].float()
    batch = {"mel": mel, "w2v": torch.randn(n, 49, 768, generator=g), "identity": identity,
             "emotion": emotion}
    return batch, target


@pytest.mark.slow
def test_overfits_eight_windows():
    # one thread: a tiny model is hundreds of small ops, and on a busy machine every op's
    # two-thread barrier waits for a core; one thread is faster and steadier here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _overfit()
    finally:
        torch.set_num_threads(threads)


def _overfit():
    cfg = from_dict({"device": "cpu", "model": {"dropout": 0.0, "d_model": 16,
                                                "lstm_hidden": 16, "fusion_channels": 8,
                                                "kan": {"hidden": [16]}}})
    model = build_model(cfg)
    batch, target = structured_windows()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, t0 = [], time.perf_counter()
    for _ in range(300):
        loss = landmark_loss(model(batch), target, 0.8, cfg.model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < 0.05 * losses[0]:
            break
    print(f"overfit: {losses[0]:.4g} -> {losses[-1]:.4g} in {len(losses)} steps, "
          f"{time.perf_counter() - t0:.1f} s")
    assert losses[-1] < 0.05 * losses[0]


def test_emotion_variable_is_per_sample_and_learned():
    model = build_model(tiny_cfg()).eval()
    with torch.no_grad():  # the embedding starts at ones; make emotions differ
        model.content_domain.emotion.weight.normal_()
    batch = make_batch(2)
    same = batch | {"emotion": torch.tensor([3, 3])}
    other = batch | {"emotion": torch.tensor([3, 5])}
    with torch.no_grad():
        a, b = model(same), model(other)
    assert torch.equal(a[0], b[0])  # sample 0 is untouched by sample 1's emotion (no
    assert not torch.equal(a[1], b[1])  # softmax across the batch as in the authors' code)
    assert model.content_domain.emotion.weight.requires_grad


def test_the_emotion_label_is_required():
    batch = {k: v for k, v in make_batch(2).items() if k != "emotion"}
    with pytest.raises(ValueError, match="emotion"):
        build_model(tiny_cfg())(batch)
    with pytest.raises(ConfigError, match="emotion_embedding"):  # the unsupervised mode is gone
        tiny_cfg(emotion_embedding="predicted")
