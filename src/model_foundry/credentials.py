"""Credentials inside a model source string: found, stripped, and never recorded or printed.

A source such as `https://user:hf_xxx@huggingface.co/org/m?token=hf_xxx` carries a secret in its user info or
its query string. Whatever we record (metadata.json, source.json, dvc.lock, MLflow) or print must be the
source without it. Tokens belong in HF_TOKEN (or `hf auth login`), which huggingface_hub reads itself.
Pure string work: no heavy imports (the CLI's `validate` uses it).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# query parameter names that carry secrets (token, access_token, api_key, X-Amz-Signature, password, ...)
SECRET_PARAM = re.compile(r"token|key|secret|passw|pwd|auth|sig|credential|session|bearer", re.IGNORECASE)
# a Hugging Face access token (hf_ + 34 letters/digits today; older ones were api_...)
HF_TOKEN = re.compile(r"\b(?:hf|api)_[A-Za-z0-9]{20,}")
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
# user info in front of a host without a scheme: `user:secret@huggingface.co/...`
BARE_USERINFO = re.compile(r"^[^\s/@:]+:[^\s/@]*@(?=[\w.-]+(?:[:/]|$))")
REDACTED = "***"


def strip_credentials(text: str) -> tuple[str, list[str]]:
    """`text` without credentials, and what was removed (for the warning; [] when nothing was).

    URLs lose their user name and password and every query parameter whose name or value looks like a
    secret; any Hugging Face token left anywhere else becomes `***`. Text without credentials is returned
    unchanged (character for character).
    """
    removed: list[str] = []
    if URL.match(text):
        text = _strip_url(text, removed)
    else:
        bare = BARE_USERINFO.match(text)
        if bare:
            text = text[bare.end() :]
            removed.append("a user name and password")
    if HF_TOKEN.search(text):
        text = HF_TOKEN.sub(REDACTED, text)
        removed.append("an access token")
    return text, removed


def redact(text: str) -> str:
    """`text` (a source, or a message that quotes one) safe to print or record."""
    return strip_credentials(text)[0]


USERINFO_IN_TEXT = re.compile(r"[^\s/@:'\"]+:[^\s/@'\"]+@(?=[\w-]+\.[\w.-]+)")
URL_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>`]+", re.IGNORECASE)


def redact_text(text: str) -> str:
    """A message with every URL in it redacted (and any Hugging Face token anywhere), e.g. a usage error
    that echoes a mistyped command line."""
    text = URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)
    text = USERINFO_IN_TEXT.sub("", text)  # what is left, e.g. `https:/u:p@host` after a path collapsed `//`
    return HF_TOKEN.sub(REDACTED, text)


def _strip_url(text: str, removed: list[str]) -> str:
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unbalanced [ in the host: drop any user info by pattern
        stripped = re.sub(r"(://)[^/?#]*@", r"\1", text)
        if stripped != text:
            removed.append("a user name and password")
        return stripped
    userinfo, at, netloc = parts.netloc.rpartition("@")
    if at:
        removed.append("a user name and password" if ":" in userinfo else "a user name")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        secret = [k for k, v in pairs if SECRET_PARAM.search(k) or HF_TOKEN.search(k) or HF_TOKEN.search(v)]
        if secret:
            query = urlencode([(k, v) for k, v in pairs if k not in secret])
            removed += [
                "a query parameter" if HF_TOKEN.search(k) else f"query parameter {k!r}"
                for k in dict.fromkeys(secret)
            ]
    fragment = parts.fragment
    if fragment and (SECRET_PARAM.search(fragment) or HF_TOKEN.search(fragment)):
        fragment = ""
        removed.append("the #fragment")
    if not removed:
        return text
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))
