"""Data half of kfusion: media I/O, the demo corpus, landmarks, audio, features, windows."""
