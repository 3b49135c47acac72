"""The licence of an imported model: read it from the model card and LICENSE file, show it, get it accepted.

Acceptance is explicit: an interactive prompt, `--accept-license`, or `license_accepted: true` in a catalog
entry. What was accepted and when is recorded in metadata.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from model_foundry.errors import FoundryError
from model_foundry.hub.report import Reporter

SHOWN_LINES = 25


@dataclass
class LicenseInfo:
    """A model's licence as its repo declares it (model card front matter + licence file)."""

    id: str | None  # SPDX-like id from the model card ("apache-2.0", "llama3.2", "other")
    name: str | None = None  # card `license_name` (for "other")
    link: str | None = None  # card `license_link`
    file: str | None = None  # the licence text file in the repo (LICENSE, LICENSE.txt, ...)
    text: str | None = None

    @property
    def declared(self) -> bool:
        """Whether the repo declares a licence at all (an id on its card or a licence file)."""
        return bool(self.id or self.file)

    @property
    def label(self) -> str:
        """The licence as shown to the user: `id (name)`, the id, the name, or where to read it."""
        if self.id and self.name and self.name != self.id:
            return f"{self.id} ({self.name})"
        return self.id or self.name or (f"see {self.file}" if self.file else "none declared")

    def to_json(self) -> dict[str, Any]:
        """Every field but the text (what source.json records)."""
        return {k: v for k, v in asdict(self).items() if k != "text"}


def card_metadata(readme: str | None) -> dict[str, Any]:
    """The YAML front matter of a model card (README.md), {} when there is none or it does not parse."""
    if not readme or not readme.startswith("---"):
        return {}
    end = readme.find("\n---", 3)
    if end < 0:
        return {}
    import yaml

    try:
        data = yaml.safe_load(readme[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def read_license(card: dict[str, Any], files: dict[str, Path]) -> LicenseInfo:
    """From card metadata and the licence files present (name → local path)."""
    lic = card.get("license")
    lic = ", ".join(map(str, lic)) if isinstance(lic, list) else (str(lic) if lic else None)
    link = card.get("license_link")
    names = sorted(files, key=lambda n: (not n.upper().startswith(("LICENSE", "LICENCE")), n))
    if isinstance(link, str) and link in files:  # a relative link names the licence file
        names.remove(link)
        names.insert(0, link)
    licence_files = [
        n for n in names if n != "README.md" and not n.upper().startswith(("NOTICE", "USE_POLICY"))
    ]
    file = licence_files[0] if licence_files else None
    text = files[file].read_text(encoding="utf-8", errors="replace") if file else None
    name = card.get("license_name")
    return LicenseInfo(lic, str(name) if name else None, str(link) if link else None, file, text)


def render(info: LicenseInfo, repo: str) -> str:
    """What the user reads before accepting: the licence id, link and the start of the text."""
    lines = [f"Licence of {repo}: {info.label}"]
    if info.link:
        lines.append(f"  link: {info.link}")
    if info.text:
        body = info.text.strip().splitlines()
        lines.append(f"  --- {info.file} ---")
        lines += [f"  {line}" for line in body[:SHOWN_LINES]]
        if len(body) > SHOWN_LINES:
            lines.append(
                f"  ... ({len(body) - SHOWN_LINES} more lines; the full text is copied with the model)"
            )
    return "\n".join(lines)


def acknowledge(
    info: LicenseInfo,
    repo: str,
    *,
    accepted: bool,
    via: str,
    reporter: Reporter,
    may_ask: bool = True,
    when: str | None = None,
) -> dict[str, Any] | None:
    """The acknowledgment record for metadata.json: {license, license_file, accepted, accepted_at, via}.

    The licence is shown (`reporter.info`) even when already `accepted` (--accept-license / catalog
    `license_accepted`, described by `via`); otherwise the user is asked (`reporter.confirm`, only when
    `may_ask`). `when` (ISO 8601) defaults to now, in UTC. Returns None, with a warning, for a repo that
    declares no licence. Raises FoundryError when the licence is refused, or not accepted and there is nobody
    to ask.
    """
    if not info.declared:
        reporter.warn(
            f"warning: {repo} declares no licence; check its terms before you use or share the model."
        )
        return None
    reporter.info(render(info, repo))
    if not accepted:
        answer = reporter.confirm(f"Do you accept the licence ({info.label}) of {repo}?") if may_ask else None
        if answer is None:
            raise FoundryError(
                f"The licence of {repo} ({info.label}) has not been accepted, and there is no terminal "
                "to ask.",
                "Read it, then pass --accept-license (CLI) or set `license_accepted: true` in the catalog "
                "entry.",
            )
        if not answer:
            raise FoundryError(f"Licence of {repo} not accepted: nothing was imported.")
        via = "interactive prompt"
    return {
        "license": info.id,
        "license_file": info.file,
        "accepted": True,
        "accepted_at": when or datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "via": via,
    }
