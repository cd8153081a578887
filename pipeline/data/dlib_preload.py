"""Imported once by the fork server of the landmarks stage's workers (map_shards `preload`):
reads dlib's shape predictor there, so every worker forked from it starts with the model
loaded and shares its ~100 MB of pages (kfusion.pipeline.data.landmarks.shape_predictor)."""
from kfusion.pipeline.data.landmarks import PREDICTOR_FILE, dlib_model_path, shape_predictor

try:
    shape_predictor(str(dlib_model_path(PREDICTOR_FILE)))
except Exception:   # noqa: BLE001 - a fork server that fails to start hides why; the workers'
    pass            # own DlibBackend reads the file again and reports what is wrong with it
