"""Index rebuilds in a process of their own, so an admin's change is live within a second on a busy replica.

Built in a thread, a 100k-fence index takes 0.34 s alone but 4-11 s while the process also answers requests:
the build's many short numpy and shapely calls each wait for the GIL behind the request thread (bench.engine).
Here a spawned process reads the organisation's fences from PostGIS itself (handing it the rows would mean
pickling their shapely geometries, ~0.9 s at 100k, in the serving process), builds the index and hands it over
in a file; the API process only loads the result (~10 ms at 100k). A first build, with no index to answer
meanwhile, stays in a thread.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import structlog
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from geofences.index import FenceIndex
from geofences.registry import build_index
from geofences.repository import fence_rows, fences_for_index_query

log = structlog.get_logger(__name__)

_SHM = Path("/dev/shm")
_engines: dict[str, Engine] = {}  # in the builder process: one engine per database URL


def build_from_database(sync_url: str, organisation_id: int, version: int) -> str:
    """Runs in the builder process: the organisation's fences, read after `version` was, as an index handed over
    in a file (`take_over` reads it)."""
    engine = _engines.get(sync_url)
    if engine is None:
        engine = _engines[sync_url] = create_engine(sync_url, poolclass=NullPool)
    with engine.connect() as connection:
        rows = fence_rows(connection.execute(fences_for_index_query(organisation_id)))
    return hand_over(build_index(rows, version))


def hand_over(index: FenceIndex) -> str:
    """The index pickled into a private file, in memory where the machine has /dev/shm. Not through the pool's
    pipe: the serving process would read 53 MB (100k fences) in many small reads, each waiting for the GIL
    behind the request thread (measured: 4-5 s); one read of a file is one wait."""
    fd, path = tempfile.mkstemp(prefix="placecast-index-", suffix=".pickle", dir=_SHM if _SHM.is_dir() else None)
    with os.fdopen(fd, "wb") as out:
        pickle.dump(index, out, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def take_over(path: str) -> FenceIndex:
    """The index `hand_over` wrote (~10 ms to load at 100k fences); the file is gone afterwards."""
    try:
        data = Path(path).read_bytes()
    finally:
        Path(path).unlink(missing_ok=True)
    index = pickle.loads(data)  # our own builder process wrote it, into a 0600 file
    if not isinstance(index, FenceIndex):
        raise TypeError(f"{path} did not hold a FenceIndex")
    return index


def _pid() -> int:
    return os.getpid()


class ProcessIndexBuilder:
    """One spawned process per API process, started with the app so the first rebuild does not wait for it."""

    def __init__(self, sync_url: str) -> None:
        self._url = sync_url
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self._pool.submit(_pid)  # spawn and import now, not on the first admin change

    async def build(self, organisation_id: int, version: int) -> FenceIndex:
        if self._pool is None:
            self.start()
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        try:
            path = await loop.run_in_executor(self._pool, build_from_database, self._url, organisation_id, version)
        except BrokenProcessPool:  # the process died (OOM killer?): a fresh one next time
            log.warning("index_builder_restarted", organisation_id=organisation_id)
            self.close()
            self.start()
            raise
        return await asyncio.to_thread(take_over, path)

    async def pid(self) -> int:
        """The builder process's id (it is spawned on `start`)."""
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, _pid)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
