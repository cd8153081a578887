"""The built-in demo corpus: eSpeak NG speech, real photographs warped to phoneme-driven
68-point tracks, written as MEAD-layout media with exact ground truth (docs/demo.md)."""
from kfusion.pipeline.demo.groundtruth import load_groundtruth

__all__ = ["load_groundtruth"]
