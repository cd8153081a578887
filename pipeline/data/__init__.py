"""Data preparation, the libraries behind the stages index -> landmarks -> audio -> features
-> windows, and the sharded Parquet storage they share. Knows nothing of training or prediction.

May import: kfusion.pipeline.io, kfusion.pipeline.media, kfusion.config.
"""
