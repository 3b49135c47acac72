"""`dvc plots show` works offline: the committed .dvc/config points DVC at tools/dvc_plots_offline.html, which
inlines the chart libraries DVC would load from a CDN (tools/make_plots_template.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from conftest import REPO, run_cmd

TEMPLATE = REPO / "tools" / "dvc_plots_offline.html"


def test_the_template_inlines_the_versions_dvc_asks_for() -> None:
    """After a DVC upgrade that changes the CDN versions, run `python tools/make_plots_template.py`."""
    from dvc_render.vega import VegaRenderer

    wanted = re.findall(r"cdn\.jsdelivr\.net/npm/([\w-]+@[\d.]+)", VegaRenderer.SCRIPTS)
    text = TEMPLATE.read_text(encoding="utf-8")
    assert len(wanted) == 3 and all(f"/*! {lib} (" in text for lib in wanted), wanted
    assert "{plot_divs}" in text and "{scripts}" not in text  # the CDN tags have nowhere to go
    assert text.count("Redistribution and use in source and binary forms") == 3  # each library's licence


def test_plots_show_writes_html_without_external_scripts(tmp_path: Path) -> None:
    """In a DVC repo with the project's .dvc/config, template, a loss CSV and an image plot
    (~5 s): no chart library or image is fetched from elsewhere."""
    repo = tmp_path / "repo"
    (repo / "plots").mkdir(parents=True)
    run_cmd(["git", "init", "-q"], repo)
    run_cmd(["dvc", "init", "-q"], repo)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / "tools").mkdir()
    shutil.copy(TEMPLATE, repo / "tools" / TEMPLATE.name)
    (repo / "plots" / "val_loss.csv").write_text("step,val_loss\n3,5.647500\n6,5.536100\n")
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16  # DVC copies image plots as they are
    (repo / "plots" / "loss_curve.png").write_bytes(png)

    run_cmd(["dvc", "plots", "show", "plots/val_loss.csv", "plots/loss_curve.png", "-o", "out"], repo)
    page = (repo / "out" / "index.html").read_text(encoding="utf-8")

    tags = re.findall(r"<(?:script|link|img)\b[^>]*>", page)
    assert tags and not [t for t in tags if re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", t)], tags
    assert "cdn.jsdelivr.net" not in page
    assert '"$schema": "https://vega.github.io/schema/vega-lite/v5.json"' in page  # the spec, inline
    assert '"val_loss": "5.5361"' in page or '"val_loss": "5.536100"' in page
    assert "vegaEmbed(" in page and 'var e="5.20.2"' in page  # the embed call, and vega itself
    assert '<img src="static/workspace_plots_loss_curve.png">' in page
    assert (repo / "out" / "static" / "workspace_plots_loss_curve.png").read_bytes() == png
