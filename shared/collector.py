"""The process's cyclic garbage collector, tuned once when the runtime is built (#23).

With CPython's defaults (a young collection every 700 net container allocations, a full one after 100 of
them) a sync tick ran ~130 young and one or two full collections, ~10 % of an incremental's CPU: decoding a
page of coupling rows or records allocates tens of thousands of dicts and lists, almost all freed by reference
counting moments later, and each full collection walked every object start-up had made (modules, SDK
clients, models) as well. Here:

- ``gc.freeze()`` once per process: what start-up made is moved to the permanent generation, which no
  collection walks again (it lives as long as the process anyway);
- the youngest generation collects every ``SYNC_GC_GEN0_THRESHOLD`` allocations (50,000): a tick's transient
  objects die by reference counting before a collection sees them. Cyclic garbage still goes, later; the
  older generations keep the interpreter's thresholds.
"""

from __future__ import annotations

import gc

_frozen = False


def thresholds(gen0: int, current: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """PURE: the collector thresholds to set for ``gen0`` (0: leave ``current``, the interpreter's)."""
    if gen0 <= 0:
        return None
    return (gen0, current[1], current[2])


def tune(gen0: int) -> None:
    """Freezes what exists (once per process) and sets the young threshold; idempotent."""
    global _frozen
    wanted = thresholds(gen0, gc.get_threshold())
    if wanted is None:
        return
    if not _frozen:
        gc.freeze()
        _frozen = True
    gc.set_threshold(*wanted)
