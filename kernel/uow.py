"""The transaction a request or a job owns, with work that must wait until it commits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = structlog.get_logger(__name__)

AfterCommit = Callable[[], Awaitable[None]]


class UnitOfWork:
    """Services receive `uow.session` and queue side effects (jobs, index refresh) with `after_commit`.

    Side effects run only once the data they refer to is committed, and are dropped on rollback.
    """

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._after_commit: list[AfterCommit] = []

    def after_commit(self, callback: AfterCommit) -> None:
        self._after_commit.append(callback)

    async def run_after_commit(self) -> None:
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                await callback()
            except Exception:  # a lost side effect is recovered by sweepers; never fail a committed request
                log.exception("after_commit_failed", callback=getattr(callback, "__qualname__", "?"))


@asynccontextmanager
async def unit_of_work(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[UnitOfWork]:
    async with factory() as session:
        uow = UnitOfWork(session)
        async with session.begin():
            yield uow
        await uow.run_after_commit()
