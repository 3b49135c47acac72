"""Regenerate tools/dvc_plots_offline.html: DVC's plots page with its chart library inlined.

`dvc plots show` renders charts with Vega; its default page loads vega, vega-lite and vega-embed from a CDN
(dvc_render/vega.py, `VegaRenderer.SCRIPTS`), so the page is blank without internet. This template, set in
the committed .dvc/config (`[plots] html_template`), carries the same three libraries, at the versions DVC
asks for, inline, and omits the `{scripts}` placeholder that would add the CDN tags.

    python tools/make_plots_template.py                 # downloads the tarballs from the npm registry
    python tools/make_plots_template.py --tarballs DIR  # or reads <pkg>-<version>.tgz from DIR

Each library is the `build/<pkg>.min.js` its npm tarball ships (what the CDN serves for `npm/<pkg>@<v>`),
preceded by its LICENSE (BSD-3-Clause) as a comment. When a DVC upgrade changes the versions in
dvc_render/vega.py, update LIBRARIES and rerun.
"""

from __future__ import annotations

import argparse
import io
import tarfile
import urllib.request
from pathlib import Path

LIBRARIES = (("vega", "5.20.2"), ("vega-lite", "5.2.0"), ("vega-embed", "6.18.2"))  # dvc_render 1.x
REGISTRY = "https://registry.npmjs.org"
OUT = Path(__file__).resolve().parent / "dvc_plots_offline.html"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Model Foundry: DVC's plots page, offline. Made by tools/make_plots_template.py from the npm tarballs
         {sources}; the libraries' licences precede each one. -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def tarball_url(name: str, version: str) -> str:
    return f"{REGISTRY}/{name}/-/{name}-{version}.tgz"


def read_tarball(name: str, version: str, folder: Path | None) -> bytes:
    """The npm tarball of `name@version`: from `folder` when given, else downloaded from the registry."""
    if folder is not None:
        return (folder / f"{name}-{version}.tgz").read_bytes()
    with urllib.request.urlopen(tarball_url(name, version), timeout=60) as response:
        data: bytes = response.read()
    return data


def script_tag(name: str, version: str, tarball: bytes) -> str:
    """`<script>` with the licence comment and the minified library; ValueError if it cannot be inlined."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:

        def member(path: str) -> str:
            file = tar.extractfile(f"package/{path}")
            if file is None:
                raise ValueError(f"{name}@{version}: no {path} in the tarball")
            return file.read().decode("utf-8")

        code, licence = member(f"build/{name}.min.js"), member("LICENSE")
    # text that would end the script element early, or that DVC would replace in the template
    for bad in ("</script", "<!--", "{plot_divs}", "{scripts}", "{refresh_tag}"):
        if bad in code.lower() or bad in licence.lower():
            raise ValueError(f"{name}@{version} contains {bad!r}: it cannot be inlined as is")
    header = (
        f"/*! {name}@{version} ({tarball_url(name, version)}), build/{name}.min.js\n{licence.strip()}\n*/"
    )
    return f"    <script>\n{header}\n{code.strip()}\n    </script>"


def make_template(folder: Path | None = None) -> str:
    """The template's text (about 0.8 MB)."""
    tags = [script_tag(name, version, read_tarball(name, version, folder)) for name, version in LIBRARIES]
    sources = ", ".join(f"{name}@{version}" for name, version in LIBRARIES)
    return PAGE.format(sources=sources, scripts="\n".join(tags))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarballs", type=Path, help="folder with <pkg>-<version>.tgz (default: download)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    text = make_template(args.tarballs)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out} ({len(text.encode()):,} bytes)")


if __name__ == "__main__":
    main()
