"""Open a `dvc plots show` page in headless Chromium with no network and check every plot drew.

    python tests/foundation/plots_offline_check.py dvc_plots/index.html [--shot shot.png]

Exit 0 when every Vega plot in the page rendered an SVG with data marks (lines, bars, points)
and the screenshot holds the series colour; 1 with a reason otherwise. Needs Debian's
`chromium`; uses `unshare -n` (an empty network namespace) when it can, and in any case
points Chromium at a dead proxy and a resolver that resolves nothing.
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--hide-scrollbars",
    "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
    "--window-size=1400,2400", "--virtual-time-budget=15000",
]
SERIES = (0x94, 0x5D, 0xD6)  # dvc-render's first rev colour, #945dd6


def offline_prefix() -> list[str]:
    """`unshare -n` if this user may make a network namespace, else nothing (flags still block)."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"],
                                                  capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"],
                                                  capture_output=True).returncode == 0:
        return ["unshare", "-rn"]
    return []


def chromium(args: list[str], url: str, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise SystemExit("chromium not found (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        cmd = offline_prefix() + [exe, *FLAGS, f"--user-data-dir={profile}", *args, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check(page: Path, shot: Path | None) -> list[str]:
    html = page.read_text(encoding="utf8")
    problems = []
    remote = re.findall(r"<script[^>]+src=[\"']?(https?:[^\"' >]+)", html)
    if remote:
        problems.append(f"page loads scripts from the network: {remote} "
                        "(is .dvc/config plots.html_template set and the template built?)")
    ids = re.findall(r"vegaEmbed\('#([^']+)'", html)
    url = page.resolve().as_uri()

    t0 = time.monotonic()
    dom = chromium(["--dump-dom"], url).stdout
    t_dom = time.monotonic() - t0
    body_at = dom.find('<div id="')  # the bundle's own strings precede the first plot div
    starts = sorted((dom.find(f'<div id="{i}"', body_at), i) for i in ids)
    for k, (at, pid) in enumerate(starts):
        if at < 0:
            problems.append(f"{pid}: plot div missing from the rendered DOM")
            continue
        seg = dom[at: starts[k + 1][0] if k + 1 < len(starts) else len(dom)]
        if 'class="marks"' not in seg:
            problems.append(f"{pid}: no Vega SVG (vegaEmbed did not run or failed)")
            continue
        # data marks: a line with at least 2 points, or a filled bar/point
        lines = re.findall(r'class="mark-line role-mark[^>]*>\s*<path[^>]* d="(M[^"]+)"', seg)
        rects = re.findall(r'class="mark-rect role-mark[^>]*>\s*<path[^>]* d="(M[^"]+)"', seg)
        if not any(d.count("L") >= 1 for d in lines) and not rects:
            problems.append(f"{pid}: SVG drawn but it has no line or bar marks (empty data?)")
    print(f"dom: {len(ids)} vega plots, {t_dom:.1f}s", file=sys.stderr)

    if shot is not None:
        t0 = time.monotonic()
        chromium([f"--screenshot={shot.resolve()}"], url)
        t_shot = time.monotonic() - t0
        import numpy as np
        from PIL import Image  # Pillow comes with matplotlib
        rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
        px = int((np.abs(rgb - np.array(SERIES)).max(axis=2) <= 40).sum())
        print(f"screenshot: {shot} {rgb.shape[1]}x{rgb.shape[0]}, {px} series-coloured pixels, "
              f"{t_shot:.1f}s",
              file=sys.stderr)
        if ids and px < 1000 * len(ids):  # ~7,500 per plot when drawn; photos alone give ~3,400
            problems.append(f"screenshot shows almost no series colour ({px} px)")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("page", type=Path)
    ap.add_argument("--shot", type=Path)
    a = ap.parse_args(argv)
    problems = check(a.page, a.shot)
    for p in problems:
        print("FAIL", p)
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
