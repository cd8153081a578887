"""The built-in demo corpus: eSpeak NG speech, real photographs warped to phoneme-driven
68-point tracks, written as MEAD-layout media with exact ground truth (docs/demo.md). Its
reader lives in kfusion.pipeline.data.groundtruth, where data preparation reads it."""
from kfusion.pipeline.data.groundtruth import load_groundtruth

__all__ = ["load_groundtruth"]
