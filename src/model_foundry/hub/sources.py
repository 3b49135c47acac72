"""SOURCE → a Hub repo (id + revision) or a local folder. Pure string/path work: no network, no heavy imports.

Accepted: `Qwen/Qwen2.5-0.5B`, `gpt2`, `https://huggingface.co/Qwen/Qwen2.5-0.5B[/tree/<rev>]` (also hf.co and
the host of HF_ENDPOINT), and an existing folder. An existing folder wins over a Hub id of the same spelling;
write `./name` to force a folder.

Credentials in a URL (`https://user:TOKEN@…`, `?token=…`) are stripped before anything is recorded or printed:
`HubSource.text` never holds them, and `HubSource.credentials` says what was removed (for a warning).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from model_foundry.credentials import strip_credentials
from model_foundry.errors import FoundryError

# huggingface_hub's rule for repo ids: [org/]name of word characters, '-' and '.', no '--' or '..'.
REPO_ID = re.compile(r"^(?:[\w\-.]{1,96}/)?[\w\-.]{1,96}$")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
HUB_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")
# Hub cache snapshot folders: .../models--<org>--<name>/snapshots/<sha>
CACHE_SNAPSHOT = re.compile(r"models--(?P<repo>.+)/snapshots/(?P<sha>[0-9a-f]{40})/?$")


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    revision: str | None  # None: the default branch
    text: str  # what the user wrote, without credentials
    credentials: tuple[str, ...] = ()  # what was stripped from `text` ("a user name and password", ...)

    @property
    def url(self) -> str:
        return f"{endpoint()}/{self.repo_id}"


@dataclass(frozen=True)
class FolderSource:
    path: Path  # absolute
    text: str
    # A Hub cache snapshot folder still knows where it came from.
    repo_id: str | None = None
    revision: str | None = None


Source = HubSource | FolderSource


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def is_repo_id(text: str) -> bool:
    return bool(REPO_ID.match(text)) and "--" not in text and ".." not in text and not text.endswith(".")


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", "..") or os.sep + os.sep in text


def parse_source(text: str, revision: str | None = None) -> Source:
    """Classify SOURCE; `revision` (--revision) must agree with a `/tree/<rev>` in a URL.

    Credentials in SOURCE are never used: they are stripped (see HubSource.credentials) and appear in no
    message. Raises FoundryError for an empty, unknown or malformed SOURCE.
    """
    text = (text or "").strip()
    removed: list[str] = []
    if text and not Path(text).expanduser().is_dir():  # an existing folder is taken as written
        text, removed = strip_credentials(text)
    if not text:
        raise FoundryError(
            "SOURCE is empty.", "Pass a Hub id (Qwen/Qwen2.5-0.5B), a Hub URL or a local folder."
        )
    if re.match(r"^[a-z][a-z0-9+.-]*://", text, re.IGNORECASE):
        return _parse_url(text, revision, tuple(removed))
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder(path, text, revision)
    if _looks_like_path(text) or path.exists():
        what = "is not a folder" if path.exists() else "does not exist"
        raise FoundryError(
            f"Local folder {text} {what}.",
            "Pass a folder in Hugging Face format (config.json, *.safetensors, tokenizer), or a Hub id.",
        )
    if is_repo_id(text):
        return HubSource(text, revision or None, text, tuple(removed))
    raise FoundryError(
        f"{text!r} is neither a Hub id, a Hub URL nor an existing folder.",
        "Examples: Qwen/Qwen2.5-0.5B, https://huggingface.co/Qwen/Qwen2.5-0.5B/tree/main, ./my-model.",
    )


def _folder(path: Path, text: str, revision: str | None) -> FolderSource:
    if revision:
        raise FoundryError(
            "--revision applies to Hub sources, not to a local folder.", f"Drop --revision for {text}."
        )
    path = path.resolve()
    match = CACHE_SNAPSHOT.search(path.as_posix())
    if match:
        return FolderSource(path, text, match["repo"].replace("--", "/"), match["sha"])
    return FolderSource(path, text)


def _parse_url(text: str, revision: str | None, removed: tuple[str, ...]) -> HubSource:
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    allowed = set(HUB_HOSTS) | {(urlsplit(endpoint()).hostname or "").lower()}
    if parts.scheme not in ("http", "https") or host not in allowed:
        raise FoundryError(
            f"{text} is not a Hugging Face Hub URL (host {host or '?'}).",
            f"Use a huggingface.co URL, or set HF_ENDPOINT={parts.scheme}://{parts.netloc} to import through "
            "that mirror.",
        )
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if segments and segments[0] in ("datasets", "spaces"):
        raise FoundryError(
            f"{text} is a {segments[0][:-1]}, not a model.", "Pass the URL of a model repository."
        )
    marker = next((i for i, s in enumerate(segments) if s in ("tree", "blob", "resolve", "commit")), None)
    repo_parts = segments if marker is None else segments[:marker]
    if not 1 <= len(repo_parts) <= 2 or not is_repo_id("/".join(repo_parts)):
        raise FoundryError(
            f"Cannot read a repository id from {text}.", "Expected https://huggingface.co/<org>/<name>."
        )
    url_rev = segments[marker + 1] if marker is not None and len(segments) > marker + 1 else None
    if url_rev and revision and url_rev != revision:
        raise FoundryError(
            f"The URL names revision {url_rev!r} but --revision is {revision!r}.", "Give the revision once."
        )
    return HubSource("/".join(repo_parts), url_rev or revision or None, text, removed)
