"""Content Domain (paper Sec. 3.3, Eq. 7): the content encoder's features (the paper's
wav2vec2, or Whisper / a phoneme posteriorgram: docs/encoders.md; `content_dim` wide) times
the emotion variable w, then three branches on the same token time axis (49 wav2vec2
frames per 1 s window): a Transformer branch guided by the identity like the Global
Domain's (ct, F wide) and two LSTMs (f: face, F wide; m: mouth, M wide).

w is a learned embedding of the emotion label (Eq. 7's intent), one content_dim-vector per
emotion, initialised to ones so training starts from the plain features. (The authors' code
multiplies by a softmax of the integer labels across the batch, under no_grad: not a
learned variable, and it mixes samples.) Where no label is known, `kfusion predict` takes
one from the separate audio -> emotion head (pipeline/training/emotion.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from kfusion.model.global_domain import AudioEncoder, IdentityDecoder
from kfusion.shapes import CONTENT_RATE_HZ


class ContentDomain(nn.Module):
    def __init__(self, *, content_dim: int, n_emotions: int, n_tokens: int, token_offset_s: float,
                 n_points: int, n_mouth: int, d_model: int, n_heads: int, encoder_layers: int,
                 decoder_layers: int, ff_mult: int, dropout: float, lstm: bool,
                 lstm_hidden: int, local_attention_s: float = 0.0):
        super().__init__()
        self.emotion = nn.Embedding(n_emotions, content_dim)
        nn.init.ones_(self.emotion.weight)
        sizes = dict(d_model=d_model, n_heads=n_heads, ff_mult=ff_mult, dropout=dropout)
        # one content_dim -> d_model projection of x' shared by the three branches: reading
        # the 768-wide features once per branch would dominate the CPU step time
        self.proj = nn.Linear(content_dim, d_model)
        # ct: "similar to the branch in the Global Domain", reading x' instead of audio
        self.encoder = AudioEncoder(in_dim=d_model, rate_hz=CONTENT_RATE_HZ,
                                    offset_s=token_offset_s, layers=encoder_layers, **sizes)
        self.decoder = IdentityDecoder(identity_dim=2 * n_points, out_dim=2 * n_points,
                                       n_tokens=n_tokens, token_offset_s=token_offset_s,
                                       layers=decoder_layers,
                                       local_attention_s=local_attention_s, **sizes)
        self.lstm = lstm
        if lstm:
            self.face_lstm = nn.LSTM(d_model, lstm_hidden, batch_first=True, bidirectional=True)
            self.face_out = nn.Linear(2 * lstm_hidden, 2 * n_points)
            self.mouth_lstm = nn.LSTM(d_model, lstm_hidden, batch_first=True, bidirectional=True)
            self.mouth_out = nn.Linear(2 * lstm_hidden, 2 * n_mouth)

    def emotion_variable(self, emotion: torch.Tensor | None) -> torch.Tensor:
        """w of Eq. 7, (B, content_dim)."""
        if emotion is None:
            raise ValueError("the batch has no 'emotion' (B,) long tensor (the emotion ids, "
                             "kfusion.shapes.EMOTIONS); w of Eq. 7 is that label's embedding")
        return self.emotion(emotion)

    def forward(self, w2v: torch.Tensor, v: torch.Tensor, emotion: torch.Tensor | None):
        """w2v (B, T, content_dim), v (B, 136) -> dict of ct (B, T, F) and, with LSTMs, f, m."""
        x = w2v * self.emotion_variable(emotion)[:, None]  # Eq. 7, (B, T, content_dim)
        h = self.proj(x)  # (B, T, d)
        memory = self.encoder(h)  # (B, T, d)
        out = {"ct": self.decoder(v, memory, self.encoder.times(memory.shape[1], memory.device))}
        if self.lstm:
            out["f"] = self.face_out(self.face_lstm(h)[0])  # (B, T, F)
            out["m"] = self.mouth_out(self.mouth_lstm(h)[0])  # (B, T, M)
        return out
