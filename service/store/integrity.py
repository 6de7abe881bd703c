"""Integrity of the stored log: walk the hash chain of one stream or of
every stream, and check that each ends where its head row says."""

from __future__ import annotations

from sqlalchemy import select

from service.domain.chain import GENESIS_HASH, BrokenLink, StreamHead, first_broken_link
from service.domain.streams import TERMINAL_STREAM_PREFIX, terminal_stream
from service.store.reads import Reads
from service.store.records import StoredEvent
from service.store.tables import cards, terminals


class Integrity(Reads):
    """Mixed into EventStore: integrity checks over its reads."""

    def heads(self, stream_id: str | None = None) -> dict[str, StreamHead]:
        """Head rows of card and terminal streams (all, or one)."""
        with self.reader.begin() as conn:
            qc = select(cards.c.card_id, cards.c.version, cards.c.last_hash)
            qt = select(terminals.c.terminal_id, terminals.c.version, terminals.c.last_hash)
            if stream_id is not None:
                qc = qc.where(cards.c.card_id == stream_id)
                qt = qt.where(terminals.c.terminal_id == stream_id.removeprefix(TERMINAL_STREAM_PREFIX))
            out = {c: StreamHead(c, v, h) for c, v, h in conn.execute(qc)}
            out.update({terminal_stream(t): StreamHead(terminal_stream(t), v, h) for t, v, h in conn.execute(qt)})
        return out

    def first_broken_link(self, stream_id: str | None = None) -> BrokenLink | None:
        """Walk the hash chain of one stream, or of every stream in the store,
        and check that each ends where its head says."""
        if stream_id is not None:
            rows = [(e.position, e.envelope(), e.prev_hash, e.hash) for e in self.stream(stream_id)]
            return first_broken_link(rows, self.heads(stream_id).get(stream_id, StreamHead(stream_id, 0, GENESIS_HASH)))
        streams: dict[str, list[StoredEvent]] = {}
        for e in self.all_events():
            streams.setdefault(e.stream_id, []).append(e)
        heads = self.heads()
        broken = []
        for sid in streams.keys() | heads.keys():
            evs = sorted(streams.get(sid, []), key=lambda e: e.version)
            rows = [(e.position, e.envelope(), e.prev_hash, e.hash) for e in evs]
            if b := first_broken_link(rows, heads.get(sid, StreamHead(sid, 0, GENESIS_HASH))):
                broken.append(b)
        return min(broken, key=lambda b: (b.position, b.stream_id), default=None)
