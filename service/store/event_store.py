"""The event store: the one object the composition root and the tools hold.
It is made of parts, each in its own module:

- unit_of_work.py  the write path: one transaction per batch (append, the
                   projection, secrets, answers), on the writer engine;
- reads.py         store.log (one log's events) and store.cards (the
                   projection, its rebuild, secrets), on the read engine;
- integrity.py     store.integrity: keyed links and stream heads;
- records.py       the one mapper from stored rows to values;
- errors.py        which database failures are retried or reported;
- hot_sql.py       the driver-level statements of the write path and rebuild;
- tables.py        the schema (made by the migrations in migrations/) and
                   the store's named log (MAIN_LOG).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime

from sqlalchemy import delete, update

from ..keys.ring import IntegrityKeys
from . import errors
from .engine import make_engine
from .hot_sql import HotSql
from .integrity import IntegrityReader
from .reads import Begin, CardReader, LogReader
from .records import utc
from .tables import MAIN_LOG, Log, log_head, requests
from .unit_of_work import UnitOfWork


class StoreView:
    """The store's readers over one way of reading: each read in its own
    transaction (EventStore itself), or every read in one snapshot
    (EventStore.snapshot)."""

    def __init__(self, read: Begin, hot_sql: HotSql, log: Log):
        self.read = read  # a read transaction, for the readers and the modules that read (checkpoints)
        self.log = LogReader(read, log)
        self.cards = CardReader(read, hot_sql)
        self.integrity = IntegrityReader(read, self.log)


class EventStore(StoreView):
    def __init__(self, url: str, *, read_pool: int = 4, log: Log = MAIN_LOG):
        self.url = url
        self.writer = make_engine(url, writer=True, pool_size=2)
        self.reader = make_engine(url, pool_size=read_pool)
        self.dialect = self.writer.dialect.name
        self._hot_sql = HotSql(self.writer.dialect, log)
        self._log = log
        super().__init__(self.reader.begin, self._hot_sql, log)

    @contextmanager
    def snapshot(self) -> Iterator[StoreView]:
        """Every read through the view sees one consistent state of the
        store, whatever commits meanwhile: on PostgreSQL one REPEATABLE READ,
        READ ONLY transaction; on SQLite one read transaction (WAL keeps its
        snapshot from its first read). A judge of the whole store (pinlife
        check, VerifyIntegrity) reads through one, so a card written between
        two of its statements never looks forged."""
        with self.reader.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                yield StoreView(lambda: nullcontext(conn), self._hot_sql, self._log)

    def ping(self) -> None:
        """Raises if the database cannot be reached (health checking)."""
        with self.reader.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def probe_write(self) -> None:
        """Raises if a write cannot commit now (a full disk, a read-only
        database): one update that changes nothing, asked by health checking
        only while the writer's batches fail (service/bootstrap/serving.py)."""
        with self.writer.begin() as conn:
            head = log_head.c.id == MAIN_LOG.head_id
            conn.execute(update(log_head).where(head).values(position=log_head.c.position))

    def close(self) -> None:
        self.writer.dispose()
        self.reader.dispose()

    is_retryable = staticmethod(errors.is_retryable)
    is_unavailable = staticmethod(errors.is_unavailable)

    def prune_answers(self, older_than: datetime) -> int:
        """Forget answers given before `older_than`; how many. Called with
        the replay window plus a margin (service/store/maintenance.py): until then a
        retry is refused as reused; after it the id is unknown again, and a
        request carrying it is a new request."""
        cutoff = utc(older_than)  # stored in UTC on every backend (SQLite compares the text)
        with self.writer.begin() as conn:
            return conn.execute(delete(requests).where(requests.c.created_at < cutoff)).rowcount

    @contextmanager
    def unit_of_work(self, integrity: IntegrityKeys, *, lock_terminals: bool = False) -> Iterator[UnitOfWork]:
        with self.writer.begin() as conn:
            uow = UnitOfWork(conn, self._hot_sql, integrity, lock_terminals=lock_terminals)
            yield uow
            uow.flush()
