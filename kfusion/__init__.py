"""kfusion: audio-driven facial landmark generation (KFusion of Dual-Domain) as a DVC pipeline.

Packages: `kfusion` (config, CLI), `pipeline` (data: media I/O, landmarks, features,
shards, windows), `model` (one module per paper block), `stages` (one thin CLI per DVC stage).
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("kfusion")
except PackageNotFoundError:  # running from a checkout without install
    __version__ = "0.0.0+local"
