"""Progress that shows in a terminal and in a log file: a tqdm bar on a terminal, otherwise one plain
line every `every_s` seconds (a long command never goes silent in logs)."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None, every_s: float = 10.0,
             enabled: bool = True) -> Iterator[T]:
    """Yield items, reporting how many are done."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, total=total, mininterval=1)
        return
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    start = last = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            of = f"/{total}" if total else ""
            print(f"[{desc}] {done}{of} done, {now - start:.0f} s", file=sys.stderr, flush=True)
