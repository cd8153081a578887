"""Speech from eSpeak NG, driven through its C API with ctypes (library from `espeakng-loader`).

`synthesize` returns 22050 Hz mono int16 samples and the phoneme timeline eSpeak reports
(phoneme name, start sample). The engine keeps state between calls: the same text in the same
process can come out a few samples different, while a fresh process is bit-identical. So call
`synthesize` once per process (the demo stage runs each clip in a fresh worker).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE_HZ = 22050  # eSpeak NG's native rate

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclass
class Prosody:
    """eSpeak parameters: rate in words/min, volume 0-200, pitch and range 0-100."""
    rate: int = 160
    volume: int = 100
    pitch: int = 50
    range: int = 50


@dataclass
class Speech:
    samples: np.ndarray            # (N,) int16 at SAMPLE_RATE_HZ
    phonemes: list[tuple[str, int]]  # (eSpeak phoneme mnemonic, start sample), in order
    words: list[tuple[int, int]]     # (text position, start sample)


_lib = None


def _library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        import espeakng_loader
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                     espeakng_loader.get_data_path().encode(),
                                     _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if rate != SAMPLE_RATE_HZ:
            raise RuntimeError(f"eSpeak NG initialised at {rate} Hz, expected {SAMPLE_RATE_HZ}")
        _lib = lib
    return _lib


def synthesize(text: str, voice: str, prosody: Prosody) -> Speech:
    """Synthesize `text` with eSpeak voice `voice` (e.g. "en-us+f3"); collect phoneme events."""
    lib = _library()
    chunks: list[np.ndarray] = []
    phonemes: list[tuple[str, int]] = []
    words: list[tuple[int, int]] = []

    def on_audio(wav, n, events):  # called synchronously from inside espeak_Synth
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                phonemes.append((ev.id.string.decode("utf-8", "replace"), int(ev.sample)))
            elif ev.type == _EVENT_WORD:
                words.append((int(ev.text_position), int(ev.sample)))
            i += 1
        return 0

    callback = _CALLBACK(on_audio)  # keep a reference for the duration of the call
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"eSpeak NG has no voice {voice!r}")
    for name in ("rate", "volume", "pitch", "range"):
        lib.espeak_SetParameter(_PARAM[name], int(getattr(prosody, name)), 0)
    buf = ctypes.create_string_buffer(text.encode("utf-8"))
    err = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if err != 0:
        raise RuntimeError(f"espeak_Synth failed with code {err} for {text!r}")
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return Speech(samples.astype(np.int16), phonemes, words)
