"""Live progress bars (tqdm, imported only when one is shown)."""

from __future__ import annotations

from typing import Any


def progress_bar(total: int, desc: str, *, enabled: bool = True, initial: int = 0, **options: Any) -> Any:
    """A live tqdm bar (imported only when shown), or None when ``enabled`` is false."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, **options)
