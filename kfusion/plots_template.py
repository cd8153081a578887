"""The HTML page `dvc plots show` fills, with Vega, Vega-Lite and Vega-Embed inlined: plots offline.

DVC's own page loads the three libraries from a CDN, so with no network every curve and bar
chart is blank. `.dvc/config` names this page instead (`plots.html_template =
plots_offline.html`, a path relative to `.dvc/`); scripts/setup.sh writes it when the
environment is built:

    python -m kfusion.plots_template .dvc/plots_offline.html

The JavaScript is vl-convert-python's bundle (one script, no imports; BSD-3-Clause like Vega,
Vega-Lite and Vega-Embed), installed from PyPI with the environment: nothing is vendored in git
and nothing is fetched when the page is viewed. The page has no `{scripts}` placeholder, so
DVC's CDN <script src> tags are never inserted. Why a template and not PNGs rendered by the
pipeline: `dvc plots diff` and `dvc exp show` keep overlaying revisions, with tooltips, zoom
and the smoothing slider (docs/training.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# dvc-render's templates declare the Vega-Lite v5 schema; the bundle's default (6.x) would
# print a version warning in the page's console.
VL_VERSION = "5.21"

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- Vega {vega} + Vega-Lite {vl} + Vega-Embed {embed}, inlined by vl-convert-python {vlc}
         (all BSD-3-Clause); no network access is needed to view this page. -->
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def stamp() -> str:
    """The line that says which vl-convert-python built a page (to skip an up-to-date one)."""
    import importlib.metadata as md
    return f"inlined by vl-convert-python {md.version('vl-convert-python')}\n"


def build_page() -> str:
    """The template: DVC fills {refresh_tag} and {plot_divs} with str.replace, so the bundle
    (placed with replace too, never str.format: it is full of braces) may contain neither, nor
    a closing script tag."""
    import importlib.metadata as md

    import vl_convert as vlc
    bundle = vlc.javascript_bundle(vl_version=VL_VERSION)
    for bad in ("{plot_divs}", "{scripts}", "{refresh_tag}", "</script"):
        if bad in bundle:
            raise SystemExit(f"error: vl-convert's bundle contains {bad!r}; it cannot be inlined")
    fills = {"{vega}": vlc.get_vega_version(), "{vl}": VL_VERSION,
             "{embed}": vlc.get_vega_embed_version(), "{vlc}": md.version("vl-convert-python")}
    page = PAGE
    for key, value in fills.items():
        page = page.replace(key, value)
    return page.replace("{bundle}", bundle)


def write(out: Path, force: bool = False) -> bool:
    """Write the page to `out` atomically unless it is there, built by the installed
    vl-convert (then nothing is done: ~50 ms). True when written."""
    if not force and out.is_file() and stamp() in out.read_text(encoding="utf8")[:600]:
        return False
    from kfusion.pipeline.io import atomic_write_text
    page = build_page()
    atomic_write_text(out, page)
    print(f"[plots] {out}: the offline page for `dvc plots show` ({len(page) // 1024} KiB)",
          file=sys.stderr)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kfusion.plots_template",
                                 description=(__doc__ or "").splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path(".dvc/plots_offline.html"))
    ap.add_argument("--force", action="store_true", help="rewrite even if up to date")
    args = ap.parse_args(argv)
    write(args.out, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
