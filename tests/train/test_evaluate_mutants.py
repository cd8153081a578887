"""Where evaluation writes, the one-line summary it prints, which windows it draws and its
per-emotion rows, against values written out here, to kill the mutants `scripts/mutation.py`
found surviving (output file names no test read, the summary line's window count and mouth_r,
the number of qualitative windows, rows for emotions that have no window)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from kfusion.config import from_dict
from kfusion.pipeline.training.evaluation import (EvalOutputs, _qualitative_indices,
                                                  per_emotion_rows, summary_line)
from kfusion.pipeline.training.metrics import MetricTable


def test_output_paths_for_a_set_and_under_a_folder(tmp_path: Path):
    cfg = from_dict({"reports": "rep", "evaluate": {"out": "met/ev", "plots": "pl/ev"}}, "test")
    assert EvalOutputs.for_set(cfg, "unseen") == EvalOutputs(
        Path("met/ev/unseen.json"), Path("rep/evaluate.json"), Path("pl/ev/unseen"))
    assert EvalOutputs.under(tmp_path / "out") == EvalOutputs(
        tmp_path / "out/metrics.json", tmp_path / "out/report.json", tmp_path / "out/plots")


def _report(systems: dict) -> dict:
    return {"systems": systems, "provenance": {"encoder": "wav2vec2", "encoder_fallback": False}}


def test_summary_line_by_hand():
    report = _report({"model": {"windows": 12, "M-LD": 1.23456, "M-LVD": 0.5, "mouth_r": 0.456},
                      "identity": {"windows": 12, "M-LD": 3.0, "M-LVD": 0.25, "mouth_r": None}})
    assert summary_line(report) == ("12 windows; M-LD/M-LVD px: model 1.235/0.500/r 0.46, "
                                    "identity 3.000/0.250 (encoder wav2vec2, fallback False)")
    assert summary_line(_report({})) == ("0 windows; M-LD/M-LVD px:  "
                                         "(encoder wav2vec2, fallback False)")


def test_qualitative_windows_are_spread_evenly_and_never_more_than_there_are():
    assert _qualitative_indices(10, 4) == {0, 3, 6, 9}          # linspace(0, 9, 4)
    assert _qualitative_indices(3, 4) == {0, 1, 2}
    assert _qualitative_indices(0, 4) == set() and _qualitative_indices(5, 0) == set()


def test_per_emotion_rows_only_for_emotions_that_have_windows():
    ref = torch.zeros(3, 3, 68, 2, dtype=torch.float64)
    pred = ref.clone()
    pred[0] += torch.tensor([3.0, 4.0])        # window 0 off by a rigid 5 px: LD 5, LVD 0
    pred[2, 1] += torch.tensor([0.0, 2.0])     # window 2: frame 1 off by 2 px
    t = MetricTable()
    t.add(pred, ref, corpus=np.array(["demo", "demo", "demo"]),
          emotion=np.array(["sad", "happy", "sad"]))
    # window 2: LD = 2 / 3 (one frame of three); LVD: velocities off by 2 in both steps -> 2
    sad = {"windows": 2, "M-LD": (5 + 2 / 3) / 2, "M-LVD": (0 + 2) / 2,
           "F-LD": (5 + 2 / 3) / 2, "F-LVD": (0 + 2) / 2}
    rows = per_emotion_rows(t)
    assert [r["emotion"] for r in rows] == ["happy", "sad"]     # EMOTIONS' order
    assert rows[0] == {"emotion": "happy", "corpus": "demo", "windows": 1, "M-LD": 0.0,
                       "M-LVD": 0.0, "F-LD": 0.0, "F-LVD": 0.0, "mouth_r": None}
    assert {k: rows[1][k] for k in sad} == {k: pytest.approx(v) for k, v in sad.items()}
    assert per_emotion_rows(MetricTable()) == []
