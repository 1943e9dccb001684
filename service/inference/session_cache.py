"""An LRU cache of onnxruntime-backed predictors, keyed by model id and artifact sha256.

Why keyed by the artifact's sha256 and not only by the model id: a gateway process
never has to be told that a new version was registered — a new version is a new
(model id, sha256) pair, so it is simply a miss and is loaded on first use.
Deleting a version calls `invalidate_model` so its memory is freed at once in this
process; other processes stop serving it because the database lookup that precedes
every cache access no longer finds it.

Bounded by both the number of sessions and the total ONNX byte size (a proxy for
the session's memory: onnxruntime keeps the initialisers it was given).
Loading happens outside the cache-wide lock, and concurrent misses on the same key
wait for one load instead of building the session several times ("single flight").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Generic, Hashable, Iterable, NamedTuple, TypeVar

Predictor = TypeVar("Predictor")


class CacheKey(NamedTuple):
    """Identifies one loadable graph: a model version's row id, its artifact's
    sha256 and which graph of it (`engine`: "spline" or "formula"). A tuple, so it
    hashes and compares in C: every prediction looks its graph up by it."""

    model_id: Hashable
    sha256: str
    engine: str = "spline"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    loads_failed: int = 0


class _Entry(Generic[Predictor]):
    __slots__ = ("predictor", "size")

    def __init__(self, predictor: Predictor, size: int):
        self.predictor = predictor
        self.size = size


class OnnxSessionCache(Generic[Predictor]):
    """Thread-safe LRU of predictors built by `factory(onnx_bytes)`.

    `get(key, load_bytes)` returns the cached predictor or calls `load_bytes()`
    (typically a database read of the artifact) and `factory` on a miss.
    `stats` counts hits, misses, evictions and failed loads; /metrics reads them
    when scraped, so a hit costs the request no metrics call.
    """

    def __init__(
        self,
        factory: Callable[[bytes], Predictor],
        max_sessions: int = 64,
        max_bytes: int = 512 * 1024 * 1024,
    ):
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self._factory = factory
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, _Entry[Predictor]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[CacheKey, threading.Lock] = {}
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: CacheKey) -> bool:
        return key in self._entries

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def keys(self) -> list[CacheKey]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._entries)

    def get_if_cached(self, key: CacheKey) -> Predictor | None:
        """The cached predictor (counted as a hit), or None without counting a miss:
        lets an event loop serve hits inline and send only misses to a thread."""
        return self._lookup(key)

    def get(self, key: CacheKey, load_bytes: Callable[[], bytes]) -> Predictor:
        predictor = self._lookup(key)
        if predictor is not None:
            return predictor
        with self._lock:
            load_lock = self._loading.setdefault(key, threading.Lock())
        with load_lock:
            # Another thread may have finished loading this key while we waited
            # (then this request counts as a hit).
            predictor = self._lookup(key)
            if predictor is not None:
                return predictor
            with self._lock:
                self.stats.misses += 1
            try:
                blob = load_bytes()
                predictor = self._factory(blob)
            except BaseException:
                with self._lock:
                    self.stats.loads_failed += 1
                raise
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            self._insert(key, _Entry(predictor, len(blob)))
            return predictor

    def warm(self, items: Iterable[tuple[CacheKey, Callable[[], bytes]]]) -> int:
        """Load the given models ahead of traffic; returns how many were loaded.
        A model that fails to load is skipped: warming must not stop a start-up."""
        loaded = 0
        for key, load_bytes in items:
            if key in self._entries:
                continue
            try:
                self.get(key, load_bytes)
            except Exception:
                continue
            loaded += 1
        return loaded

    def invalidate_model(self, model_id: Hashable) -> int:
        """Drop every cached graph of this model id; returns how many were dropped."""
        with self._lock:
            doomed = [k for k in self._entries if k.model_id == model_id]
            for k in doomed:
                self._bytes -= self._entries.pop(k).size
        return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _lookup(self, key: CacheKey) -> Predictor | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
        return entry.predictor

    def _insert(self, key: CacheKey, entry: _Entry[Predictor]) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[key] = entry
            self._bytes += entry.size
            # Evict least recently used, but never the entry just inserted: a single
            # model larger than max_bytes is still served (it just is not kept with others).
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_sessions or self._bytes > self.max_bytes
            ):
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.size
                self.stats.evictions += 1
