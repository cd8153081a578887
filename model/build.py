"""The whole model from the typed config and the content encoder's record:
`build_model(cfg, encoder) -> nn.Module`.

forward(batch) takes the windows stage's arrays
    mel (B, 100, n_mels) log-mel at 100 frames/s, w2v (B, n_tokens, content_dim) content
    encoder states (49 x 768 for wav2vec2, 50 x 384 for Whisper tiny.en, 51 x 191 for the PPG),
    identity (B, 68, 2) crop px, emotion (B,) long (index into kfusion.shapes.EMOTIONS)
and returns (B, 30, 68, 2) landmarks in crop px. Internally everything is in [-1, 1]
units (model/loss.py); with `model.target: offset` the head predicts the displacement from
the identity landmarks, with `absolute` the positions themselves.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from kfusion.config import Config, ModelConfig
from kfusion.device import resolve_device
from kfusion.model.content_domain import ContentDomain
from kfusion.model.global_domain import GlobalDomain
from kfusion.model.kfusion import ConcatLinear, KFusion
from kfusion.model.loss import from_unit, to_unit
from kfusion.shapes import CONTENT_RATE_HZ, EMOTIONS, MOUTH_INDICES, N_POINTS, window_timing


class KFusionModel(nn.Module):
    def __init__(self, mcfg: ModelConfig, *, n_tokens: int, n_frames: int, n_mels: int,
                 mel_rate_hz: float, content_dim: int, token_offset_s: float):
        super().__init__()
        self.mcfg, self.n_tokens, self.n_frames, self.n_mels = mcfg, n_tokens, n_frames, n_mels
        self.content_dim = content_dim
        mouth = list(MOUTH_INDICES)
        self.register_buffer("mouth_indices", torch.tensor(mouth), persistent=False)
        sizes = dict(d_model=mcfg.d_model, n_heads=mcfg.n_heads,
                     encoder_layers=mcfg.encoder_layers, decoder_layers=mcfg.decoder_layers,
                     ff_mult=mcfg.ff_mult, dropout=mcfg.dropout)
        if mcfg.global_domain:
            mel = mcfg.global_input == "mel"
            self.global_domain = GlobalDomain(
                in_dim=n_mels if mel else content_dim,
                rate_hz=mel_rate_hz if mel else CONTENT_RATE_HZ,
                offset_s=0.0 if mel else token_offset_s, n_tokens=n_tokens,
                token_offset_s=token_offset_s, n_points=N_POINTS, n_mouth=len(mouth),
                normalise=mel and mcfg.mel_norm == "window",
                local_attention_s=mcfg.local_attention_s, **sizes)
        self.content_domain = ContentDomain(
            content_dim=content_dim, n_emotions=len(EMOTIONS), n_tokens=n_tokens,
            token_offset_s=token_offset_s, n_points=N_POINTS, n_mouth=len(mouth), lstm=mcfg.lstm,
            lstm_hidden=mcfg.lstm_hidden, local_attention_s=mcfg.local_attention_s, **sizes)
        face_branches = 1 + mcfg.lstm + mcfg.global_domain  # f, gb, ct
        mouth_branches = mcfg.lstm + mcfg.global_domain  # m, gb_m
        if mcfg.fusion == "none":
            width = 2 * (N_POINTS * face_branches + len(mouth) * mouth_branches)
            self.kfusion = ConcatLinear(in_dim=width, out_dim=2 * N_POINTS,
                                        n_tokens=n_tokens, n_frames=n_frames)
        else:
            k = mcfg.kan
            self.kfusion = KFusion(
                face_branches=face_branches, mouth_branches=mouth_branches, n_tokens=n_tokens,
                n_frames=n_frames, channels=mcfg.fusion_channels, mouth_indices=mouth,
                head=mcfg.fusion, kan_widths=[N_POINTS, *k.hidden, N_POINTS],
                kan_kwargs=dict(grid_size=k.grid_size, spline_order=k.spline_order,
                                grid_range=tuple(k.grid_range), scale_noise=k.scale_noise,
                                scale_base=k.scale_base, scale_spline=k.scale_spline),
                interpolate=mcfg.token_to_frame == "interpolate",
                head_init_scale=mcfg.head_init_scale)

    def _input(self, batch: dict, key: str, shape: tuple[int | None, ...]) -> torch.Tensor:
        if key not in batch:
            raise KeyError(f"model batch lacks {key!r}; expected keys mel, w2v, identity, "
                           f"emotion (see model/build.py)")
        x = batch[key]
        if x.dim() != len(shape) + 1 or any(
                want is not None and got != want for got, want in zip(x.shape[1:], shape)):
            raise ValueError(f"model input {key!r}: shape {tuple(x.shape)}, expected "
                             f"(B, {', '.join('any' if d is None else str(d) for d in shape)}) for "
                             f"this config's window")
        device, dtype = self.mouth_indices.device, next(self.parameters()).dtype
        return x.to(device=device, dtype=dtype)

    def forward(self, batch: dict) -> torch.Tensor:
        w2v = self._input(batch, "w2v", (self.n_tokens, self.content_dim))  # (B, T_tok, D)
        identity = to_unit(self._input(batch, "identity", (N_POINTS, 2)), self.mcfg)
        v = identity.transpose(1, 2).flatten(1)  # (B, 136): x row then y row (the (2, 68) grid)
        v_m = identity[:, self.mouth_indices].transpose(1, 2).flatten(1)  # (B, 40), Eq. 4
        emotion = batch.get("emotion")
        if emotion is not None:
            emotion = emotion.to(self.mouth_indices.device)
        c = self.content_domain(w2v, v, emotion)
        face, mouth = [], []
        if self.mcfg.lstm:
            face.append(c["f"])
            mouth.append(c["m"])
        if self.mcfg.global_domain:
            audio = (self._input(batch, "mel", (None, self.n_mels))
                     if self.mcfg.global_input == "mel" else w2v)
            gb, gb_m = self.global_domain(audio, v, v_m)
            face.append(gb)
            mouth.append(gb_m)
        face.append(c["ct"])  # Eq. 9 order: f, gb, ct; Eq. 8: m, gb_m
        y = self.kfusion(face, mouth)  # (B, n_frames, 68, 2) in [-1, 1] units
        if self.mcfg.target == "offset":
            y = y + identity[:, None]
        return from_unit(y, self.mcfg)  # crop px


def build_model(cfg: Config, encoder: dict) -> nn.Module:
    """The model on cfg.device for features of `encoder` (the content encoder's record, from
    the windows' meta or the checkpoint: its name sets the tokens per window and their times,
    its feature_dim the Content Domain's input width), its initial weights a function of
    cfg.seed only (the global RNG is left as it was)."""
    device = resolve_device(cfg.device)
    t = window_timing(cfg, encoder["encoder"])  # the window's sizes and audio frame rates
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = KFusionModel(cfg.model, n_tokens=t.n_tokens, n_frames=t.n_frames,
                             n_mels=t.n_mels, mel_rate_hz=t.mel_rate_hz,
                             content_dim=int(encoder["feature_dim"]),
                             token_offset_s=t.token_offset_s)
    return model.to(device)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level block (and the KFusion head), for docs and logs."""
    out = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
    head = getattr(getattr(model, "kfusion", None), "head", None)
    if head is not None:
        out["kfusion.head"] = sum(p.numel() for p in head.parameters())
    out["total"] = sum(p.numel() for p in model.parameters())
    return out
