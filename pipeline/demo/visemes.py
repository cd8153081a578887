"""From eSpeak's phoneme timeline to 68-point tracks: visemes, coarticulation, expression,
blinks and head motion.

Articulation is five numbers per instant: jaw `open`, lip `width` (spread > 0, narrow < 0),
lip `round`ing, bilabial `close` (p, b, m) and `teeth` (lower lip to upper teeth: f, v).
Each phoneme sets a target for all five with a dominance (Cohen & Massaro's coarticulation
model): the track at time t is the dominance-weighted mean of the targets around t, so a
strong target (a bilabial closure) wins over its vowel neighbours and a weak one (h) borrows
its neighbours' shape. The mouth moves `lead_s` ahead of the sound, as real speakers' do.
Emotion sets prosody (in tts terms), a static expression (brows, lids, mouth corners) and how
big the articulation and head motion are; MEAD's levels 1-3 scale the emotion.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kfusion.pipeline.demo.tts import Prosody

PARAMS = ("open", "width", "round", "close", "teeth")


@dataclass(frozen=True)
class Viseme:
    open: float = 0.0
    width: float = 0.0
    round: float = 0.0
    close: float = 0.0
    teeth: float = 0.0
    dominance: float = 1.0
    reach_s: float = 0.04   # how far (e-fold, seconds) the dominance extends past the segment

    def vector(self) -> np.ndarray:
        return np.array([self.open, self.width, self.round, self.close, self.teeth])


V = Viseme
REST = V(0.0, 0.0, 0.0, 0.0, 0.0, 2.0)   # silence: the mouth relaxes, lips together
# eSpeak NG's English phoneme mnemonics (stress marks and variant digits stripped).
# A tuple is a diphthong: the first target over the first half, the second over the second.
VISEMES: dict[str, Viseme | tuple[Viseme, Viseme]] = {
    # bilabials close the lips; they dominate their neighbours
    "p": V(close=1.0, dominance=5.0, reach_s=0.02), "b": V(close=1.0, dominance=5.0, reach_s=0.02),
    "m": V(close=1.0, dominance=5.0, reach_s=0.02),
    # labiodentals: lower lip under the upper teeth
    "f": V(open=0.1, teeth=1.0, dominance=4.0, reach_s=0.025),
    "v": V(open=0.1, teeth=1.0, dominance=4.0, reach_s=0.025),
    # rounded consonants
    "w": V(open=0.15, width=-0.4, round=1.0, dominance=4.0),
    "S": V(open=0.15, width=-0.1, round=0.6, dominance=3.0),
    "Z": V(open=0.15, width=-0.1, round=0.6, dominance=3.0),
    "tS": V(open=0.15, width=-0.1, round=0.6, dominance=3.0),
    "dZ": V(open=0.15, width=-0.1, round=0.6, dominance=3.0),
    "r": V(open=0.18, width=-0.1, round=0.4, dominance=1.5),
    # tongue-tip and back consonants: the jaw rises, the lips part a little
    "T": V(open=0.18, width=0.1, dominance=1.5), "D": V(open=0.18, width=0.1, dominance=1.5),
    "s": V(open=0.08, width=0.35, dominance=2.0), "z": V(open=0.08, width=0.35, dominance=2.0),
    "t": V(open=0.12, width=0.1), "d": V(open=0.12, width=0.1),
    "n": V(open=0.12, width=0.1), "l": V(open=0.2, width=0.05), "j": V(open=0.15, width=0.4, dominance=1.5),
    "k": V(open=0.18), "g": V(open=0.18), "N": V(open=0.18), "x": V(open=0.2),
    "h": V(open=0.4, dominance=0.3), "?": V(open=0.15, dominance=0.5),
    # vowels
    "a": V(open=0.85, width=0.2), "A": V(open=1.0), "A:": V(open=1.0), "aa": V(open=0.9),
    "V": V(open=0.6), "0": V(open=0.7, width=-0.1, round=0.4),
    "O": V(open=0.6, width=-0.2, round=0.6), "O:": V(open=0.6, width=-0.2, round=0.7),
    "o": V(open=0.5, width=-0.2, round=0.7),
    "E": V(open=0.55, width=0.3), "e": V(open=0.5, width=0.35),
    "@": V(open=0.4), "3": V(open=0.4), "3:": V(open=0.45, round=0.2), "@L": V(open=0.35),
    "I": V(open=0.35, width=0.45), "i": V(open=0.3, width=0.55), "i:": V(open=0.3, width=0.6),
    "U": V(open=0.3, width=-0.3, round=0.8), "u:": V(open=0.25, width=-0.4, round=1.0),
    "u": V(open=0.25, width=-0.4, round=1.0),
}
for _name, (_a, _b) in {"aI": ("a", "i"), "aU": ("a", "u"), "eI": ("e", "i"),
                        "oU": ("o", "u"), "OI": ("O", "i"), "e@": ("e", "@"),
                        "I@": ("I", "@"), "U@": ("U", "@"), "i@": ("i", "@"), "aI@": ("a", "@"),
                        "aU@": ("a", "@"), "O@": ("O", "@"), "A@": ("A", "@"),
                        "o@": ("o", "@")}.items():
    VISEMES[_name] = (VISEMES[_a], VISEMES[_b])
PAUSES = ("_", "_:", "_!", "_^_", "||", "|")
BILABIALS = ("p", "b", "m")


def normalise(name: str) -> str:
    """eSpeak's mnemonic without stress marks and variant suffixes: "'3:" -> "3:", "@2" -> "@"."""
    n = name.lstrip("',%=")
    if n.startswith("_") or n in ("|", "||"):
        return "_"
    if n in VISEMES:
        return n
    stripped = n.rstrip("0123456789#-/^;")
    return stripped if stripped else n


def viseme_of(name: str) -> Viseme | tuple[Viseme, Viseme]:
    n = normalise(name)
    if n == "_":
        return REST
    if n in VISEMES:
        return VISEMES[n]
    for k in sorted(VISEMES, key=len, reverse=True):   # longest known prefix: "aI@3" -> "aI@"
        if n.startswith(k):
            return VISEMES[k]
    return V(open=0.3, dominance=0.5)


def timeline(phonemes: list[tuple[str, int]], n_samples: int, sample_rate_hz: int,
             pad_samples: int = 0) -> list[tuple[str, float, float]]:
    """(phoneme, start_s, end_s), a rest segment filling any silence before the first one."""
    out = []
    starts = [pad_samples + s for _, s in phonemes]
    if not phonemes or starts[0] > 0:
        out.append(("_", 0.0, (starts[0] if phonemes else n_samples) / sample_rate_hz))
    for i, (name, _) in enumerate(phonemes):
        end = starts[i + 1] if i + 1 < len(phonemes) else n_samples
        out.append((name, starts[i] / sample_rate_hz, max(end, starts[i]) / sample_rate_hz))
    return out


def _segments(tl: list[tuple[str, float, float]]) -> tuple[np.ndarray, ...]:
    """Targets (K, 5), dominances (K,), reaches (K,), intervals (K, 2); a diphthong is two."""
    targets, dom, reach, span = [], [], [], []
    for name, t0, t1 in tl:
        v = viseme_of(name)
        parts = v if isinstance(v, tuple) else (v,)
        edges = np.linspace(t0, t1, len(parts) + 1)
        for p, a, b in zip(parts, edges[:-1], edges[1:]):
            targets.append(p.vector())
            dom.append(p.dominance)
            reach.append(p.reach_s)
            span.append((a, b))
    return np.array(targets), np.array(dom), np.array(reach), np.array(span)


def articulation(tl: list[tuple[str, float, float]], times_s: np.ndarray, *, lead_s: float,
                 smooth_s: float = 0.015) -> np.ndarray:
    """Articulation (T, 5) at video times `times_s`, `lead_s` ahead of the audio timeline.

    Dominance of a segment: its weight inside the middle half of its interval, falling
    off as exp(-distance / reach_s) outside it (short for p/b/m: closed lips must not
    close the neighbouring vowels). A short Gaussian (smooth_s) rounds the corners.
    """
    targets, dom, reach, span = _segments(tl)
    grid = np.arange(times_s[0] - 0.1, times_s[-1] + 0.1 + 1e-9, 0.005) + lead_s  # 200 Hz
    centre, half = span.mean(1), (span[:, 1] - span[:, 0]) / 4
    dist = np.maximum(0.0, np.abs(grid[:, None] - centre[None]) - half[None])       # (G, K)
    w = dom[None] * np.exp(-dist / reach[None])
    track = (w @ targets) / np.maximum(w.sum(1, keepdims=True), 1e-12)            # (G, 5)
    sigma = smooth_s / 0.005
    k = np.exp(-0.5 * (np.arange(-3 * int(sigma + 1), 3 * int(sigma + 1) + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(track, ((len(k) // 2, len(k) // 2), (0, 0)), mode="edge")
    track = np.stack([np.convolve(padded[:, j], k, mode="valid") for j in range(5)], 1)
    return np.stack([np.interp(times_s + lead_s, grid, track[:, j]) for j in range(5)], 1)


# ----------------------------------------------------------------------------- emotion
@dataclass(frozen=True)
class Style:
    prosody: Prosody         # eSpeak parameters at full intensity
    articulation: float      # scales jaw opening
    bias: tuple[float, float, float]  # added to (open, width, round) throughout
    head: float              # scales head motion
    blink_per_s: float


STYLES: dict[str, Style] = {
    "neutral": Style(Prosody(160, 100, 50, 45), 1.0, (0.0, 0.0, 0.0), 1.0, 0.30),
    "angry": Style(Prosody(180, 170, 45, 75), 1.15, (0.0, 0.1, 0.0), 1.4, 0.25),
    "contempt": Style(Prosody(150, 100, 42, 55), 0.9, (0.0, 0.1, 0.0), 0.9, 0.30),
    "disgusted": Style(Prosody(140, 110, 40, 50), 0.95, (0.0, 0.15, 0.0), 1.0, 0.30),
    "fear": Style(Prosody(195, 90, 72, 70), 1.05, (0.05, 0.25, 0.0), 1.2, 0.15),
    "happy": Style(Prosody(180, 135, 68, 85), 1.1, (0.0, 0.3, 0.0), 1.3, 0.30),
    "sad": Style(Prosody(120, 70, 35, 18), 0.8, (0.0, -0.05, 0.0), 0.6, 0.35),
    "surprised": Style(Prosody(170, 150, 78, 95), 1.2, (0.12, 0.0, 0.15), 1.4, 0.15),
}
LEVEL_GAIN = {1: 0.4, 2: 0.7, 3: 1.0}   # MEAD intensity levels


def prosody_for(emotion: str, level: int, pitch_offset: int = 0, rate_scale: float = 1.0) -> Prosody:
    """Neutral prosody moved toward the emotion's by the level's gain, then the speaker's."""
    g = LEVEL_GAIN[level]
    n, e = STYLES["neutral"].prosody, STYLES[emotion].prosody
    mix = lambda a, b: a + g * (b - a)  # noqa: E731
    return Prosody(rate=int(round(mix(n.rate, e.rate) * rate_scale)),
                   volume=int(round(mix(n.volume, e.volume))),
                   pitch=int(np.clip(round(mix(n.pitch, e.pitch) + pitch_offset), 0, 100)),
                   range=int(round(mix(n.range, e.range))))


def _inward(pts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """+1 for points left of the face midline (inward = +x), -1 right of it."""
    return np.where(pts[idx, 0] < pts[27:31, 0].mean(), 1.0, -1.0)


# Static expression at full intensity: (indices, inward shift, upward shift) in interocular units.
_EXPRESSIONS: dict[str, list[tuple[list[int], float, float]]] = {
    "neutral": [],
    "happy": [([48, 54], -0.07, 0.12), ([49, 53, 55, 59, 60, 64], -0.03, 0.05),
              ([40, 41, 46, 47], 0.0, 0.04), ([1, 2, 3, 13, 14, 15], -0.02, 0.02)],
    "sad": [([20, 21, 22, 23], 0.02, 0.12), ([19, 24], 0.0, 0.05), ([17, 26], 0.0, -0.04),
            ([48, 54, 60, 64], 0.0, -0.08), ([37, 38, 43, 44], 0.0, -0.05),
            ([56, 57, 58], 0.0, 0.02)],
    "angry": [(list(range(17, 27)), 0.0, -0.10), ([20, 21, 22, 23], 0.06, -0.06),
              ([40, 41, 46, 47], 0.0, 0.04), ([50, 51, 52], 0.0, -0.02),
              ([56, 57, 58], 0.0, 0.02), ([48, 54], 0.0, -0.03), ([31, 35], -0.03, 0.0)],
    "contempt": [([54, 64], -0.06, 0.09), ([53, 55], -0.02, 0.04), ([24, 25], 0.0, 0.03)],
    "disgusted": [([50, 51, 52], 0.0, 0.10), ([49, 53], 0.0, 0.06), ([31, 32, 33, 34, 35], 0.0, 0.04),
                  ([21, 22], 0.03, -0.08), ([17, 18, 19, 20, 23, 24, 25, 26], 0.0, -0.05),
                  ([40, 41, 46, 47], 0.0, 0.05), ([48, 54], 0.0, -0.04), ([56, 57, 58], 0.0, -0.03)],
    "fear": [([20, 21, 22, 23], 0.04, 0.08), (list(range(17, 27)), 0.0, 0.05),
             ([37, 38, 43, 44], 0.0, 0.04), ([48, 54], -0.08, -0.03), ([60, 64], -0.05, -0.02)],
    "surprised": [(list(range(17, 27)), 0.0, 0.11), ([37, 38, 43, 44], 0.0, 0.05)],
}


def expression(neutral: np.ndarray, emotion: str, level: int) -> np.ndarray:
    """The speaker's rest shape (68, 2) with the emotion's static expression at this level."""
    g, s = LEVEL_GAIN[level], _interocular(neutral)
    p = neutral.astype(np.float64).copy()
    for idx, inward, up in _EXPRESSIONS[emotion]:
        idx = np.array(idx)
        p[idx, 0] += g * inward * s * _inward(neutral, idx)
        p[idx, 1] -= g * up * s
    return p


def _interocular(pts: np.ndarray) -> float:
    return float(np.linalg.norm(pts[42:48].mean(0) - pts[36:42].mean(0)))


# ----------------------------------------------------------------------------- mouth
_JAW_WEIGHT = {4: 0.2, 5: 0.45, 6: 0.7, 7: 0.85, 8: 0.9, 9: 0.85, 10: 0.7, 11: 0.45, 12: 0.2}


def mouth(rest: np.ndarray, art: np.ndarray) -> np.ndarray:
    """Apply articulation (T, 5) to a rest shape (68, 2): tracks (T, 68, 2)."""
    o, w, r, c, f = (art[:, j][:, None] for j in range(5))   # each (T, 1)
    mw = float(np.linalg.norm(rest[54] - rest[48]))          # mouth width, the mouth's unit
    T = len(art)
    dx, dy = np.zeros((T, 68)), np.zeros((T, 68))
    sealed = np.clip(c / 0.6, 0, 1)   # lips seal once closure dominates (a plateau, as in speech)
    jaw = np.clip(o, 0, None) * (1 - sealed) * (1 - 0.8 * np.clip(f, 0, 1)) * 0.42 * mw
    for i, wgt in _JAW_WEIGHT.items():
        dy[:, i] += wgt * jaw[:, 0]
    for idx, wgt in (([65, 66, 67], 1.0), ([56, 57, 58], 0.95), ([55, 59], 0.75),
                     ([48, 54, 60, 64], 0.45), ([61, 62, 63], -0.08), ([49, 50, 51, 52, 53], -0.06)):
        dy[:, idx] += wgt * jaw
    inward = _inward(rest, np.arange(68))[None]              # (1, 68)
    for idx, wgt in (([48, 54, 60, 64], 1.0), ([49, 53, 55, 59, 61, 63, 65, 67], 0.5)):
        dx[:, idx] -= inward[:, idx] * wgt * 0.08 * mw * w            # spread: corners outward
        dx[:, idx] += inward[:, idx] * wgt * 0.14 * mw * r            # round: corners inward
    dx[:, [61, 63, 65, 67]] += inward[:, [61, 63, 65, 67]] * 0.06 * mw * r
    dy[:, [50, 51, 52]] += (-0.04 * r + 0.03 * c) * mw                # protrude / press
    dy[:, [56, 57, 58]] += (0.04 * r - 0.03 * c - 0.10 * f) * mw
    dy[:, [65, 66, 67]] += -0.03 * f * mw
    p = rest[None] + np.stack([dx, dy], -1)
    for up, lo in ((61, 67), (62, 66), (63, 65)):            # the lower lip never crosses the upper
        p[:, lo, 1] = np.maximum(p[:, lo, 1], p[:, up, 1])
    return p


def inner_gap(tracks: np.ndarray) -> np.ndarray:
    """Mouth opening (T,): mean vertical distance of the inner lips (61-67, 62-66, 63-65)."""
    return (tracks[:, [67, 66, 65], 1] - tracks[:, [61, 62, 63], 1]).mean(-1)


# ----------------------------------------------------------------------------- eyes, head
def blinks(rng: np.random.Generator, n_frames: int, fps: int, per_s: float) -> tuple[np.ndarray, list[float]]:
    """Eyelid closure (T,) in [0, 1] from Poisson blink onsets; 60 ms down, 30 held, 110 up."""
    t = np.arange(n_frames) / fps
    end_s = n_frames / fps
    onsets, x = [], rng.exponential(1.0 / per_s) * 0.6
    while x < end_s:
        onsets.append(float(x))
        x += 0.35 + rng.exponential(1.0 / per_s)
    closure = np.zeros(n_frames)
    for t0 in onsets:
        u = t - t0
        shape = np.where(u < 0, 0, np.where(u < 0.06, u / 0.06, np.where(
            u < 0.09, 1.0, np.clip(1 - (u - 0.09) / 0.11, 0, 1))))
        closure = np.maximum(closure, shape)
    return closure, onsets


def eyelids(tracks: np.ndarray, closure: np.ndarray) -> np.ndarray:
    """Upper lids (37, 38, 43, 44) move down toward the lower lids (41, 40, 47, 46)."""
    p = tracks.copy()
    b = closure[:, None]
    for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
        p[:, up] = tracks[:, up] + 0.92 * b * (tracks[:, lo] - tracks[:, up])
        p[:, lo] = tracks[:, lo] + 0.05 * b * (tracks[:, up] - tracks[:, lo])
    return p


def energy_envelope(samples: np.ndarray, sample_rate_hz: int, n_frames: int, fps: int) -> np.ndarray:
    """RMS (T,) of the speech in a one-frame window centred on each video frame's time."""
    x = samples.astype(np.float64)
    hop = sample_rate_hz / fps
    half = int(round(hop / 2))
    out = np.zeros(n_frames)
    for k in range(n_frames):
        c = int(round(k * hop))
        seg = x[max(0, c - half):c + half + 1]
        out[k] = np.sqrt(np.mean(seg ** 2)) if len(seg) else 0.0
    return out


def head_motion(energy: np.ndarray, rng: np.random.Generator, fps: int, frame_px: int,
                gain: float) -> np.ndarray:
    """(T, 4): dx, dy (px), roll (degrees), scale. A nod and a slight lean with the
    smoothed speech energy, plus slow random drift."""
    T = len(energy)
    t = np.arange(T) / fps
    e = energy / max(float(energy.max()), 1e-9)
    alpha = 1.0 / (1.0 + 0.25 * fps)                    # one-pole low-pass, 0.25 s
    es = np.zeros(T)
    for k in range(T):
        es[k] = (es[k - 1] if k else e[0]) + alpha * (e[k] - (es[k - 1] if k else e[0]))
    es -= es.mean()

    def drift():
        f = rng.uniform(0.15, 0.5, 2)
        ph = rng.uniform(0, 2 * np.pi, 2)
        return 0.6 * np.sin(2 * np.pi * f[0] * t + ph[0]) + 0.4 * np.sin(2 * np.pi * f[1] * t + ph[1])

    a = gain * frame_px / 256
    dx = a * 2.0 * drift()
    dy = a * (4.0 * es + 1.0 * drift())
    roll = gain * (1.5 * drift() + 2.0 * es)
    scale = 1.0 + gain * 0.012 * es
    return np.stack([dx, dy, roll, scale], 1)


def apply_head(points: np.ndarray, head: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """Rigid motion (T, 4) applied to points (T, N, 2) about a fixed pivot (2,)."""
    th = np.deg2rad(head[:, 2])
    cos, sin = np.cos(th) * head[:, 3], np.sin(th) * head[:, 3]
    rel = points - pivot
    x = cos[:, None] * rel[..., 0] - sin[:, None] * rel[..., 1]
    y = sin[:, None] * rel[..., 0] + cos[:, None] * rel[..., 1]
    return np.stack([x, y], -1) + pivot + head[:, None, :2]


# ----------------------------------------------------------------------------- all together
@dataclass
class Motion:
    tracks: np.ndarray        # (T, 68, 2) ground truth in video px
    articulation: np.ndarray  # (T, 5)
    closure: np.ndarray       # (T,) eyelids
    blink_onsets_s: list[float]
    head: np.ndarray          # (T, 4)


def animate(neutral: np.ndarray, tl: list[tuple[str, float, float]], energy: np.ndarray, *,
            emotion: str, level: int, fps: int, frame_px: int, lead_s: float,
            rng: np.random.Generator) -> Motion:
    """Ground-truth tracks for one clip: rest shape -> expression -> speech -> blinks -> head."""
    T = len(energy)
    style, g = STYLES[emotion], LEVEL_GAIN[level]
    art = articulation(tl, np.arange(T) / fps, lead_s=lead_s)
    art[:, 0] *= 1.0 + g * (style.articulation - 1.0)
    art[:, :3] += g * np.array(style.bias)
    rest = expression(neutral, emotion, level)
    tracks = mouth(rest, art)
    closure, onsets = blinks(rng, T, fps, style.blink_per_s)
    tracks = eyelids(tracks, closure)
    head = head_motion(energy, rng, fps, frame_px, 1.0 + g * (style.head - 1.0))
    tracks = apply_head(tracks, head, neutral[30])
    return Motion(tracks.astype(np.float32), art, closure, onsets, head)
