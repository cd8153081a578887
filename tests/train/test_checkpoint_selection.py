"""scripts/checkpoint_selection.py: finding a run's checkpoints in a DVC cache by the hash
its evaluation record names, and the per-row means over seeds (by hand)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("checkpoint_selection",
                                                  REPO / "scripts" / "checkpoint_selection.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _put(cache: Path, data: bytes) -> str:
    md5 = hashlib.md5(data).hexdigest()
    path = cache / "files" / "md5" / md5[:2] / md5[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return md5


def _models_dir(cache: Path, files: dict[str, bytes]) -> None:
    """A `models` folder as DVC caches it: each file by its md5, and a .dir manifest."""
    manifest = json.dumps([{"md5": _put(cache, b), "relpath": name} for name, b in sorted(files.items())])
    md5 = hashlib.md5(manifest.encode()).hexdigest()
    path = cache / "files" / "md5" / md5[:2] / (md5[2:] + ".dir")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest)


def test_checkpoints_are_found_by_the_sha256_of_best_pt(tmp_path):
    cs = _script()
    _models_dir(tmp_path, {"best.pt": b"run A best", "last.pt": b"run A last", "train.json": b"{}"})
    _models_dir(tmp_path, {"best.pt": b"run B best", "last.pt": b"run B last"})
    _models_dir(tmp_path, {"best.pt": b"run C best"})                  # no last.pt: not a run
    _models_dir(tmp_path, {"shard-00000.parquet": b"features"})        # another stage's folder
    found = cs.cached_models(tmp_path)
    key = hashlib.sha256(b"run A best").hexdigest()
    assert sorted(found) == sorted([key, hashlib.sha256(b"run B best").hexdigest()])
    assert found[key]["last"].read_bytes() == b"run A last"
    assert found[key]["summary"].read_bytes() == b"{}"
    assert found[hashlib.sha256(b"run B best").hexdigest()]["summary"] is None


def test_rows_average_the_seeds_that_were_found():
    cs = _script()
    run = lambda row, seed, epoch, b, l: {  # noqa: E731
        "row": row, "seed": seed, "models": "x.dir", "best_epoch": epoch,
        "best": {"M-LD": b, "mouth_r": 0.5}, "last": {"M-LD": l, "mouth_r": 0.8}}
    runs = [run("proposed", 1, 12, 3.0, 3.2), run("proposed", 2, 2, 4.0, 3.0),
            {"row": "proposed", "seed": 3, "models": None}, {"row": "paper", "seed": 1, "models": None}]
    assert cs.summarise(runs) == {"proposed": {
        "seeds": 2, "selected_epochs": [12, 2],
        "best": {"M-LD": 3.5, "mouth_r": 0.5}, "last": {"M-LD": 3.1, "mouth_r": 0.8}}}


def test_each_run_names_what_made_it_from_its_record(tmp_path, monkeypatch):
    cs = _script()
    monkeypatch.chdir(tmp_path)
    rec = tmp_path / "metrics/ablations/demo-x/proposed/seed-7/test.json"
    rec.parent.mkdir(parents=True)
    prov = {"corpora": ["demo"], "encoder": "whisper", "encoder_fallback": False, "seed": 7,
            "checkpoint_sha256": "ab", "dropout_rng": "pcg64", "augment": {"mirror_p": 0.5},
            "differs_from_paper": {"model.target": "offset"}, "epochs": 20}
    rec.write_text(json.dumps({"provenance": prov}))
    cs.write("demo-x", [{"row": "proposed", "seed": 7, "models": None}])
    out = json.loads((tmp_path / "metrics/checkpoint_selection/demo-x.json").read_text())
    assert out["runs"][0]["provenance"] == {k: v for k, v in prov.items() if k != "epochs"}
