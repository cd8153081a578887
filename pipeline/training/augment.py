"""Training-time augmentation (`train.augment`): the paper applies "several augmentation
methods" without naming them; these are the ones that help a model trained on few speakers
generalise. Each is a switch, off by default (docs/training.md gives the measured effects).

- mirror (`mirror_p`): the window's identity and target landmarks flipped left/right about
  the crop's centre line, with the 68-point left/right permutation (`MIRROR`), so point 36
  (the left eye's outer corner) is still a left eye's outer corner. The speech is unchanged:
  a mirrored face says the same words.
- similarity (`similarity_p`): one random rotation (+-rotate_deg), scale (1 +- scale) and shift
  (+-shift_px) about the crop centre, applied to identity and target together: head pose and
  face size vary, the motion the audio drives does not.
- time masking (`time_masks` spans of up to `time_mask_s`): the same instants blanked in the
  log-mel (100 Hz) and the content encoder's states (50 Hz), each channel set to its window
  mean, so neither stream can stand in for the other there;
- channel masking (`channel_masks`): per mask, one band of up to `mel_band` mel bins and a
  random `encoder_fraction` of the encoder's channels set to their window mean.
- perturbed speech (`audio_p`): the window's mel and encoder states replaced by those of one
  of `features.audio_augment`'s copies of its clip (pitch-shifted or noisy speech; the
  features stage caches them, pipeline/data/perturb.py), drawn uniformly. Done first, so the
  masks apply on top.

Randomness comes from one torch.Generator per training step, seeded from (seed, epoch, step),
so a resumed run draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

import math

import torch

from kfusion.shapes import CONTENT_RATE_HZ

# iBUG 68-point left/right pairs (each side's index as seen in the image); unlisted points
# (nose bridge 27-30, nose tip 33, lip centres 51, 57, 62, 66, chin 8) map to themselves.
_PAIRS = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)]
          + [(31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
             (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])


def _mirror_permutation() -> list[int]:
    perm = list(range(68))
    for a, b in _PAIRS:
        perm[a], perm[b] = b, a
    return perm


MIRROR = _mirror_permutation()


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The augmentation draws of one training step: a function of (seed, epoch, step) only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 100_003 + step) % 2**63)


# Each augmentation: the switch that turns it on (a share or a count > 0), then the settings it
# reads (train.augment's keys).
SWITCHES = {"mirror_p": ("mirror_p",),
            "similarity_p": ("similarity_p", "rotate_deg", "scale", "shift_px"),
            "time_masks": ("time_masks", "time_mask_s"),
            "channel_masks": ("channel_masks", "mel_band", "encoder_fraction"),
            "audio_p": ("audio_p",)}


def enabled(aug) -> bool:
    return any(getattr(aug, switch) > 0 for switch in SWITCHES)


def settings_on(aug, audio_variants: list[str] = ()) -> dict:
    """The settings of the augmentations that are on ({} when none is: the default), as an
    evaluation record names them; with audio_p, the perturbed copies it drew from
    (features.audio_augment)."""
    on = {k: getattr(aug, k) for switch, keys in SWITCHES.items()
          if getattr(aug, switch) > 0 for k in keys}
    if aug.audio_p > 0:
        on["audio_variants"] = list(audio_variants)
    return on


def mirror(points: torch.Tensor, centre_px: float) -> torch.Tensor:
    """(..., 68, 2) -> flipped about x = centre_px, points re-indexed left <-> right."""
    out = points[..., MIRROR, :].clone()
    out[..., 0] = 2 * centre_px - out[..., 0]
    return out


def similarity(points: torch.Tensor, angle_rad: torch.Tensor, scale: torch.Tensor,
               shift_px: torch.Tensor, centre_px: float) -> torch.Tensor:
    """(B, ..., 68, 2) with one transform per window: rotate by angle, scale about the crop
    centre, then shift. angle, scale (B,), shift (B, 2)."""
    c, s = torch.cos(angle_rad), torch.sin(angle_rad)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (B, 2, 2)
    shape = (points.shape[0],) + (1,) * (points.dim() - 2) + (2, 2)
    a = (scale[:, None, None] * rot).reshape(shape)
    x = points - centre_px
    return (x.unsqueeze(-2) @ a.transpose(-1, -2)).squeeze(-2) + centre_px + \
        shift_px.reshape((points.shape[0],) + (1,) * (points.dim() - 2) + (2,))


def _mask_time(x: torch.Tensor, starts_s: torch.Tensor, lengths_s: torch.Tensor,
               rate_hz: float) -> None:
    """In place: frames of x (B, T, C) inside [start, start + length) s set to the window's
    per-channel mean."""
    t = torch.arange(x.shape[1], dtype=torch.float32) / rate_hz            # (T,)
    hit = ((t[None, None] >= starts_s[..., None])
           & (t[None, None] < (starts_s + lengths_s)[..., None])).any(1)    # (B, T)
    mean = x.mean(1, keepdim=True).expand_as(x)
    x[hit] = mean[hit]


def _mask_channels(x: torch.Tensor, keep: torch.Tensor) -> None:
    """In place: channels where keep (B, C) is False set to their window mean."""
    drop = ~keep[:, None, :].expand_as(x)
    mean = x.mean(1, keepdim=True).expand_as(x)
    x[drop] = mean[drop]


def swap_audio(batch: dict, p: float, read_variant, n_variants: int,
               gen: torch.Generator) -> dict:
    """A new batch dict where a share `p` of the windows take the mel and encoder states of
    a perturbed copy of their speech: read_variant(k, rows) -> (mel, w2v) of variant k for
    those rows of the split (batch["index"]). Two draws per window: whether, then which."""
    B = batch["index"].shape[0]
    on = torch.rand(B, generator=gen) < p
    which = torch.randint(n_variants, (B,), generator=gen)
    if not on.any():
        return batch
    out = dict(batch)
    mel, enc = batch["mel"].clone(), batch["w2v"].clone()
    for k in which[on].unique().tolist():
        rows = torch.nonzero(on & (which == k)).flatten()
        m, w = read_variant(k, batch["index"][rows].numpy())
        mel[rows], enc[rows] = m.to(mel.dtype), w.to(enc.dtype)
    out["mel"], out["w2v"] = mel, enc
    return out


def augment_batch(batch: dict, aug, crop_px: int, mel_rate_hz: float,
                  gen: torch.Generator) -> dict:
    """A new batch dict with the enabled augmentations applied (the input is not modified).
    Landmarks are in the crop's pixels (crop_px wide); the mel at mel_rate_hz frames/s."""
    out = dict(batch)
    B = batch["identity"].shape[0]
    centre = (crop_px - 1) / 2.0                   # pixel-index coordinates of the crop
    ident, target = batch["identity"].float(), batch["target"].float()
    if aug.mirror_p > 0:
        flip = torch.rand(B, generator=gen) < aug.mirror_p
        if flip.any():
            ident, target = ident.clone(), target.clone()
            ident[flip], target[flip] = mirror(ident[flip], centre), mirror(target[flip], centre)
    if aug.similarity_p > 0:
        on = (torch.rand(B, generator=gen) < aug.similarity_p).float()
        angle = on * (torch.rand(B, generator=gen) * 2 - 1) * math.radians(aug.rotate_deg)
        scale = 1 + on * (torch.rand(B, generator=gen) * 2 - 1) * aug.scale
        shift = on[:, None] * (torch.rand(B, 2, generator=gen) * 2 - 1) * aug.shift_px
        ident = similarity(ident, angle, scale, shift, centre)
        target = similarity(target, angle, scale, shift, centre)
    out["identity"], out["target"] = ident, target
    if aug.time_masks > 0 or aug.channel_masks > 0:
        mel, enc = batch["mel"].clone().float(), batch["w2v"].clone().float()
        if aug.time_masks > 0:
            span_s = mel.shape[1] / mel_rate_hz
            lengths = torch.rand(B, aug.time_masks, generator=gen) * aug.time_mask_s
            starts = torch.rand(B, aug.time_masks, generator=gen) * (span_s - lengths)
            _mask_time(mel, starts, lengths, mel_rate_hz)
            _mask_time(enc, starts, lengths, CONTENT_RATE_HZ)
        for _ in range(aug.channel_masks):
            width = torch.randint(0, aug.mel_band + 1, (B,), generator=gen)
            first = (torch.rand(B, generator=gen) * (mel.shape[2] - width + 1)).long()
            bins = torch.arange(mel.shape[2])[None]
            _mask_channels(mel, ~((bins >= first[:, None]) & (bins < (first + width)[:, None])))
            _mask_channels(enc, torch.rand(B, enc.shape[2], generator=gen) >= aug.encoder_fraction)
        out["mel"], out["w2v"] = mel.to(batch["mel"].dtype), enc.to(batch["w2v"].dtype)
    return out
