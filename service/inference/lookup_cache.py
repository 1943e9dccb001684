"""A short-lived memo of "which model version does this key's request name".

Looking the version up in the database costs more than the whole rest of a
single-row prediction (a query per request: ~4x the no-op route's latency in
bench/serving.py). Remembering the answer for `ttl_s` (1 s by default) means a
version registered or deleted by another process is seen within that time; this
process's own deletions clear it at once. ttl_s = 0 turns it off. While the database
is unreachable the last known answer stands in (``last_known``).
"""

from __future__ import annotations

import threading
import time
from typing import Generic, Hashable, TypeVar

Value = TypeVar("Value")


class LookupCache(Generic[Value]):
    def __init__(self, ttl_s: float, max_entries: int = 10_000):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, Value]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Value | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() >= entry[0]:
            return None
        return entry[1]

    def last_known(self, key: Hashable) -> Value | None:
        """The value remembered for key, expired or not: what to go on while the database
        cannot be asked. Expired entries stay until replaced or cleared (bounded by max_entries)."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def put(self, key: Hashable, value: Value) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # crude, but bounded; entries are cheap to rebuild
            self._entries[key] = (time.monotonic() + self.ttl_s, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
