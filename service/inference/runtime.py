"""The gateway's inference engine: the caller's model looked up, its graph taken from
the session cache, micro-batched per graph and run by its MicroBatcher.
One InferenceRuntime per process (app.state.inference).

Hot path: the model version named by a request is remembered for a second
(LookupCache); with it and the session cached, a small request is converted on the
event loop (a large one on the pool) and handed to the graph's MicroBatcher, which
runs a single request on the loop when the graph is measured to be quick, and merged
batches and slow graphs on a dedicated thread pool (see batcher.py). Without those
caches, one hop to the pool first does the lookup query and the session load, shared
by the requests that need the same lookup meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import sqlalchemy as sa

from service.auth import hash_key, revocations
from service.inference.batcher import MicroBatcher
from service.inference.lookup_cache import LookupCache
from service.inference.model_lookup import (BAD_KEY, MISSING_KEY, ServedModel, Unauthorized, find_served_model,
                                            key_is_active, read_artifact, recent_served_models)
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.session_cache import CacheKey, OnnxSessionCache
from service.inference.settings import ServingSettings

# to_matrix(served, predictor) -> (rows, n_in) float32; raises on bad input.
ToMatrix = Callable[[ServedModel, OnnxPredictor], np.ndarray]

# The database is down or restarting (the engine reconnects once it is back).
DATABASE_DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError)

# Requests of at most this many rows are converted on the event loop (microseconds);
# bigger ones on the pool, so that one large request cannot stall the others.
INLINE_ROWS = 64


@dataclass
class Inference:
    served: ServedModel
    predictor: OnnxPredictor
    x: np.ndarray                      # (rows, n_in) float32, as run
    outputs: dict[str, np.ndarray]     # graph output name -> (rows, width)
    input_ranges: np.ndarray | None  # (n_in, 2): per input [low, high] of the training range


def input_ranges(predictor: OnnxPredictor) -> np.ndarray | None:
    """The graph's "input_ranges" metadata as an (n_in, 2) array, or None when it is
    absent or does not fit the graph (the rows are then not flagged, not refused)."""
    try:
        ranges = np.asarray(json.loads(predictor.metadata["input_ranges"]), dtype=np.float64)
    except (KeyError, ValueError, TypeError):
        return None
    return ranges if ranges.shape == (predictor.n_features, 2) else None


class InferenceRuntime:
    def __init__(self, settings: ServingSettings, db: sa.Engine,
                 on_batch: Callable[[int, int, str], None] | None = None):
        self.settings = settings
        self.db = db
        self.executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="onnx")
        self.cache: OnnxSessionCache[OnnxPredictor] = OnnxSessionCache(
            OnnxPredictor, settings.session_cache_max_sessions, settings.session_cache_max_bytes)
        self._on_batch = on_batch
        self._batchers: dict[CacheKey, MicroBatcher] = {}
        self._lookups: LookupCache[tuple[ServedModel, np.ndarray | None]] = LookupCache(settings.model_lookup_ttl_s)
        self._active_keys: LookupCache[bool] = LookupCache(settings.model_lookup_ttl_s)  # key hash -> True
        self._revocations_seen = revocations()
        self._resolving: dict[tuple, asyncio.Future] = {}

    # -- blocking parts, run on the pool ------------------------------------------------
    def resolve(self, api_key: str | None, name: str, version: int | None,
                engine: str) -> tuple[ServedModel, OnnxPredictor, np.ndarray | None]:
        """The caller's model version, its loaded graph and the training ranges."""
        with self.db.connect() as conn:
            served = find_served_model(conn, api_key, name, version, engine)
            predictor = self._graph(conn, served)
            ranges = input_ranges(predictor)
            if ranges is None and engine == "formula":
                # Formula graphs may not carry the ranges; the spline graph of the same version does.
                try:
                    spline = find_served_model(conn, api_key, name, served.version, "spline")
                    ranges = input_ranges(self._graph(conn, spline))
                except LookupError:
                    ranges = None
        self._lookups.put(_lookup_key(api_key, name, version, engine), (served, ranges))
        return served, predictor, ranges

    def _check_key(self, key_hash: str) -> None:
        with self.db.connect() as conn:
            if not key_is_active(conn, key_hash):
                raise Unauthorized(BAD_KEY)
        self._active_keys.put(key_hash, True)

    def _forget_if_revoked(self) -> None:
        """Clear the remembered key checks and lookups when this process revoked a key
        since the last call (auth.revocations())."""
        count = revocations()
        if count != self._revocations_seen:
            self._active_keys.clear()
            self._lookups.clear()
            self._revocations_seen = count

    def recent(self, api_key, name, version, engine):
        """(served, predictor, ranges) when both the lookup and the session are cached."""
        self._forget_if_revoked()
        hit = self._lookups.get(_lookup_key(api_key, name, version, engine))
        if hit is None:
            return None
        served, ranges = hit
        predictor = self.cache.get_if_cached(served.cache_key)
        return None if predictor is None else (served, predictor, ranges)

    def _graph(self, conn: sa.Connection, served: ServedModel) -> OnnxPredictor:
        return self.cache.get(served.cache_key, partial(read_artifact, conn, served.model_id,
                                                        served.artifact_kind))

    def warm(self) -> int:
        """Load the most recently registered versions' graphs; returns how many loaded."""
        if self.settings.warm_models == 0:
            return 0
        with self.db.connect() as conn:
            items = [(s.cache_key, partial(read_artifact, conn, s.model_id, s.artifact_kind))
                     for s in recent_served_models(conn, self.settings.warm_models)]
            return self.cache.warm(items)

    # -- the event loop's side ----------------------------------------------------------
    async def call(self, fn, *args):
        """Run a blocking function on the inference pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args))

    async def authenticate(self, api_key: str | None) -> None:
        """Raises Unauthorized unless `api_key` is active. From the headers alone, before a
        route reads its body: an unauthenticated request costs no body read or parse.
        A valid key is remembered for model_lookup_ttl_s, as the lookups are."""
        if not api_key:
            raise Unauthorized(MISSING_KEY)
        self._forget_if_revoked()
        key_hash = hash_key(api_key)
        if self._active_keys.get(key_hash) is None:
            try:
                await self.call(self._check_key, key_hash)
            except DATABASE_DOWN:
                # A key this process saw active, and did not revoke, is taken as still
                # active until the database can say otherwise.
                if self._active_keys.last_known(key_hash) is None:
                    raise

    async def infer(self, api_key: str | None, name: str, version: int | None, engine: str,
                    to_matrix: ToMatrix, n_rows: int) -> Inference:
        """n_rows: how many rows the request holds (decides where it is converted)."""
        found = self.recent(api_key, name, version, engine) or await self._resolve_or_last_known(
            api_key, name, version, engine)
        served, predictor, ranges = found
        if n_rows <= INLINE_ROWS:
            x = to_matrix(served, predictor)
        else:
            x = await self.call(to_matrix, served, predictor)
        values = await self._batcher(served.cache_key, predictor).submit(x)
        return Inference(served, predictor, x, dict(zip(predictor.output_names, values)), ranges)

    async def _resolve_or_last_known(self, api_key, name, version, engine):
        """resolve(), or while the database is unreachable the last version this request
        named, if its graph is still loaded: predictions go on through an outage."""
        try:
            return await self._resolve_shared(api_key, name, version, engine)
        except DATABASE_DOWN:
            known = self._lookups.last_known(_lookup_key(api_key, name, version, engine))
            predictor = None if known is None else self.cache.get_if_cached(known[0].cache_key)
            if predictor is None:
                raise
            return known[0], predictor, known[1]

    async def _resolve_shared(self, api_key, name, version, engine):
        """resolve() on the pool, once for all the requests that ask the same while it
        runs: when a remembered lookup expires under load, every request in flight
        would otherwise query the database for the same answer."""
        key = _lookup_key(api_key, name, version, engine)
        pending = self._resolving.get(key)
        if pending is None:
            pending = self._resolving[key] = asyncio.ensure_future(
                self.call(self.resolve, api_key, name, version, engine))
            pending.add_done_callback(lambda _: self._resolving.pop(key, None))
        # Shielded: a caller that goes away does not cancel the others' lookup.
        return await asyncio.shield(pending)

    def _batcher(self, key: CacheKey, predictor: OnnxPredictor) -> MicroBatcher:
        batcher = self._batchers.get(key)
        if batcher is None:
            self._drop_stale_batchers()
            settings = self.settings
            # Batching off: the same queue, but every call takes a single request.
            batcher = self._batchers[key] = MicroBatcher(
                partial(_run_graph, predictor), self.executor,
                settings.batch_max_rows if settings.batching else 1, settings.batch_max_delay_us,
                self._on_batch, max_concurrent=settings.inference_threads,
                inline_max_us=settings.inline_max_us)
        return batcher

    def invalidate_model(self, model_id: str) -> None:
        """Forget a deleted model version's graphs and batchers in this process."""
        self._lookups.clear()
        self.cache.invalidate_model(model_id)
        for key in [k for k in self._batchers if k.model_id == model_id]:
            del self._batchers[key]

    def _drop_stale_batchers(self) -> None:
        # A batcher outlives its graph's cache entry only until the next new batcher.
        for key in [k for k in self._batchers if k not in self.cache]:
            del self._batchers[key]

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _lookup_key(api_key: str | None, name: str, version: int | None, engine: str) -> tuple:
    return (hash_key(api_key) if api_key else None, name, version, engine)


def _run_graph(predictor: OnnxPredictor, x: np.ndarray) -> list[np.ndarray]:
    """Validated (rows, n_in) float32 -> the graph's outputs in predictor.output_names order."""
    return predictor.run(x)
