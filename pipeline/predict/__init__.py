"""Prediction for a user's own speech and face photo: the library behind `kfusion predict`.

    from kfusion.pipeline.predict import predict, Predictor
    r = predict("speech.wav", "face.jpg", out="out.mp4")

May import: kfusion.pipeline.io, .media, .data, .training (checkpoints), kfusion.model,
kfusion.config.
"""
from kfusion.pipeline.predict.predictor import PredictError, PredictResult, Predictor, predict

__all__ = ["PredictError", "PredictResult", "Predictor", "predict"]
