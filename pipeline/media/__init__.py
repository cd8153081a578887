"""Media I/O: the ffmpeg binary, probing containers, decoding audio, streaming video frames,
writing H.264 mp4, drawing landmarks. Knows nothing of corpora, features or models.

May import: kfusion.pipeline.io.
"""
