"""kfusion.pipeline: everything around the model, one sub-package per concern.

    io.py       atomic writes, reject records, stage summaries, progress (imports no sub-package)
    media/      reading and writing media: ffmpeg, probing, audio decode, video frames, mp4, drawing
    data/       data preparation: index, landmarks, audio, features, windows, sharded storage
    demo/       the built-in demo corpus generator (speech synthesis, faces, ground truth)
    training/   the training loop, the window dataset, checkpoints, metrics, evaluation
    predict/    `kfusion predict`: speech + a face photo -> landmarks and a video

Import rule (tests/foundation/test_structure.py enforces it): a sub-package may import only
the ones above it in this order -- io <- media <- data <- demo / training <- predict -- plus
`kfusion.config` and, for training and predict, `kfusion.model`. Data preparation never
imports training or prediction.
"""
