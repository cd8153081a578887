"""The Table 2 writer: layout, ranking marks, baselines from the Proposed run."""
import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("ablations", REPO / "scripts" / "ablations.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table_layout_and_marks(tmp_path, monkeypatch):
    ab = _load()
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "metrics" / "ablations"
    out.mkdir(parents=True)
    for k, (name, _) in enumerate(ab.ROWS):
        v = 5.0 - k  # Proposed (last) is best everywhere
        m = {"M-LD": v, "M-LVD": v / 2, "F-LD": v / 3, "F-LVD": v / 4, "windows": 10,
             "encoder": "x", "encoder_fallback": True, "trained": {"seed": 1, "epochs": 8}}
        if name == "Proposed":
            m["overall"] = {"identity": {"M-LD": 9.0, "M-LVD": 0.1, "F-LD": 9.0, "F-LVD": 9.0},
                            "mean_motion": {"M-LD": 8.0, "M-LVD": 8.0, "F-LD": 8.0, "F-LVD": 8.0}}
        (out / f"{ab._slug(name)}.json").write_text(json.dumps(m))
    text = ab.write_table(tmp_path / "t.md")
    lines = text.splitlines()
    assert lines[2] == "| Method | M-LD (↓) | M-LVD (↓) | F-LD (↓) | F-LVD (↓) |"
    assert lines[4].startswith("| w/o KFusion | 5.000 |")
    assert "| Proposed | **1.000** | <u>0.500</u> |" in text  # identity's M-LVD 0.1 is best
    assert "| baseline: identity held still | 9.000 | **0.100** |" in text
    assert "Seed 1, 8 epochs" in text
