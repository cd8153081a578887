"""One way for every benchmark to write its result: the figures plus the machine they were
measured on, so a number in bench/README.md can always be read against how busy the box was.

    from record import Machine, write_result
    machine = Machine.start(threads=2)          # before the timed work: load average now
    ...
    write_result("predict", figures, machine, summary)   # bench/results/predict.json + one line

The machine block: cpu count, the thread count the bench ran with, the 1/5/15-minute load
averages at start and end (the cores are shared: a figure measured at load 3 on 2 cores is
not comparable with one at load 0), the Python and torch versions and the git commit.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _commit() -> str:
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "unknown"


@dataclass
class Machine:
    threads: int
    load_start: list[float]

    @classmethod
    def start(cls, threads: int) -> "Machine":
        return cls(threads=int(threads), load_start=_loadavg())

    def block(self) -> dict:
        import torch  # every bench imports torch anyway; the version goes with the figures
        return {"cpu_count": os.cpu_count(), "threads": self.threads,
                "load_average_start": self.load_start, "load_average_end": _loadavg(),
                "python": platform.python_version(), "torch": torch.__version__,
                "commit": _commit()}


def write_result(name: str, figures: dict, machine: Machine, summary: str,
                 out: str | Path | None = None) -> Path:
    """Write figures + the machine block to bench/results/<name>.json (or `out`), print the
    one summary line (with the load average, so a noisy figure says so) and return the path."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    payload = dict(figures)
    payload["machine"] = machine.block()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)  # never a partial result file
    m = payload["machine"]
    print(f"[bench {name}] {summary} (x{m['threads']} threads on {m['cpu_count']} cores, "
          f"load {m['load_average_start'][0]:.1f}->{m['load_average_end'][0]:.1f}) -> "
          f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}", file=sys.stdout)
    return path
