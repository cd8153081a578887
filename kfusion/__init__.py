"""kfusion: audio-driven facial landmark generation (KFusion of Dual-Domain) as a DVC pipeline.

One installed namespace. Its folders in the repository (docs/layout.md):
`kfusion/` (config, CLI) is `kfusion`; `model/` (one module per paper block) is
`kfusion.model`; `pipeline/` (media, data preparation, demo, training, prediction) is
`kfusion.pipeline`; `stages/` (one thin CLI per DVC stage) is `kfusion.stages`.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("kfusion")
except PackageNotFoundError:  # running from a checkout without install
    __version__ = "0.0.0+local"
