"""Per-file change texts of a unified diff, for the SWE-RL unified-diff reward (:mod:`llmrl.rewards.swe`).

The diff is parsed by the ``unidiff`` library (``PatchSet``), as facebookresearch/swe-rl does, so the
file split, hunk validation and line handling are exactly the library's. Per patched file:

* binary files are left out;
* a rename (unidiff's ``is_rename``: neither side is ``/dev/null`` and the names differ after their
  first two characters) is keyed by the source name without a leading ``a/`` and starts with the line
  ``"rename from SRC to DST"`` (``b/`` dropped from DST); any other file is keyed by unidiff's ``path``;
* the text is that header, a newline, and the file's hunks (each ``str(hunk)`` -- ``@@ -a,b +c,d @@
  section`` and the body -- stripped) joined by newlines, the whole stripped. A file without hunks and
  without a rename header (e.g. a mode change) keeps an empty text: it still counts as a path.

A later file with the same key replaces the earlier text (the key keeps its first position). A diff that
``unidiff`` rejects -- any exception -- is unparsable (``None``); callers decide what that scores.

Bounded time (the one deviation, for input no diff tool writes): two of unidiff's line regexes backtrack
super-linearly on crafted lines -- the URI form of the ``diff --git`` header (about n·c·s steps for a line
of n characters with c ``"://"`` and s spaces: a 100 KB line took 4.7 s, 1 MB 521 s) and the
``Binary files ... differ`` line (about n·k steps with k ``" and "``: 40 KB took 11.5 s). A text with a
``diff --git`` line where c·(s + 2) > :data:`MAX_URI_SPLITS`, or a ``Binary file(s)`` line with more than
:data:`MAX_BINARY_ANDS` ``" and "``, is therefore unparsable without being handed to unidiff (unidiff
either runs the slow regex on such a line or, inside a hunk, rejects it). Real header lines have c ≤ 2,
s ≤ 4 (more only with spaces in paths) and k = 1. Otherwise unidiff is linear, at 1-4 µs per line: 1.2 s
for a million empty lines, 4 s when they follow a hunk (each is appended to it) -- hence the line limit
of :func:`~llmrl.rewards.swe.swe_rl_diff_reward`. (Measured on the 2-core CPU of :mod:`llmrl.rewards.swe`.)

unidiff is used rather than a hand-written parser so that the file split is the reference's by
construction, including the quirks of whichever unidiff version is installed with it.
"""

from __future__ import annotations

import re
from types import ModuleType

MAX_URI_SPLITS = 64
MAX_BINARY_ANDS = 8
_HEADER_LINE = re.compile(r"^(?:diff --git |Binary files? )[^\n]*", re.MULTILINE)
_unidiff: ModuleType | None = None


def _unidiff_module() -> ModuleType:
    global _unidiff
    if _unidiff is None:
        import unidiff  # imported on first use: ``import llmrl.rewards`` does not need it

        _unidiff = unidiff
    return _unidiff


def pathological_header(text: str) -> bool:
    """True if ``text`` has a header line on which unidiff's regexes would backtrack super-linearly
    (the guard described in the module docstring). Linear time."""
    for match in _HEADER_LINE.finditer(text):
        line = match.group()
        if line.startswith("d"):
            uris = line.count("://")
            if uris and uris * (line.count(" ") + 2) > MAX_URI_SPLITS:
                return True
        elif line.count(" and ") > MAX_BINARY_ANDS:
            return True
    return False


def _without(name: str, prefix: str) -> str:
    return name[len(prefix) :] if name.startswith(prefix) else name


def parse_unified_diff(text: str) -> dict[str, str] | None:
    """path → normalised change text of each non-binary file of ``text`` (see the module docstring),
    or None if the diff is unparsable. ``{}`` for a text without files (e.g. prose)."""
    if not isinstance(text, str) or pathological_header(text):
        return None
    unidiff = _unidiff_module()
    try:
        patched_files = unidiff.PatchSet(text)
        changes: dict[str, str] = {}
        for patched in patched_files:
            if patched.is_binary_file:
                continue
            header = ""
            key = patched.path
            if patched.is_rename:
                key = _without(patched.source_file, "a/")
                header = f"rename from {key} to {_without(patched.target_file, 'b/')}"
            hunks = "\n".join(str(hunk).strip() for hunk in patched)
            changes[key] = (header + "\n" + hunks).strip()
    except Exception:  # unidiff raises UnidiffParseError and, on some inputs, other errors
        return None
    return changes
