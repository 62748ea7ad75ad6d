"""Links in message text: finding them (no I/O)."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["find_urls", "urls_newest_first"]

_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING = ".,;:!?'\""
_PAIRS = {")": "(", "]": "[", "}": "{", ">": "<"}


def find_urls(text: str) -> list[str]:
    """The URLs in ``text`` in order (``http(s)://`` or ``www.``).

    Punctuation that ends the sentence is not part of the URL, and a closing
    bracket is only kept when the URL opened it (``(see https://x.org/a_(b))``).
    """
    out = []
    for match in _URL.finditer(text):
        url = match.group(0)
        while url:
            last = url[-1]
            if last in _TRAILING or (last in _PAIRS and url.count(_PAIRS[last]) < url.count(last)):
                url = url[:-1]
            else:
                break
        if url.lower().startswith("www."):
            url = "https://" + url
        if "." in url.split("://", 1)[-1]:
            out.append(url)
    return out


def urls_newest_first(texts: Iterable[str]) -> list[str]:
    """Every distinct URL of ``texts`` (oldest first), the newest first."""
    seen: dict[str, None] = {}
    for text in reversed(list(texts)):
        for url in reversed(find_urls(text)):
            seen.setdefault(url, None)
    return list(seen)
