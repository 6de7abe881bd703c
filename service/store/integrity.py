"""The integrity reader (store.integrity), with the integrity keys: one
stream's keyed links ending where its head row says, or every stream's with
global positions 1..head without a gap (held in memory: a small store's).
The whole-store check, in bounded memory and one snapshot, that adds card
MACs, the rebuild, the lawful-history replay and checkpoints is check.py."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from ..domain.chain import GENESIS_HASH, BrokenLink, Link, StreamHead, first_broken_link
from ..domain.streams import TERMINAL_STREAM_PREFIX, terminal_stream
from ..keys.ring import IntegrityKeys
from .reads import Begin, LogReader
from .tables import cards, terminals


class IntegrityReader:
    def __init__(self, begin: Begin, log: LogReader):
        self.begin = begin
        self.log = log

    def heads(self, stream_id: str | None = None) -> dict[str, StreamHead]:
        """Head rows of card and terminal streams (all, or one)."""
        with self.begin() as conn:
            qc = select(cards.c.card_id, cards.c.version, cards.c.last_hash)
            qt = select(terminals.c.terminal_id, terminals.c.version, terminals.c.last_hash)
            if stream_id is not None:
                qc = qc.where(cards.c.card_id == stream_id)
                qt = qt.where(terminals.c.terminal_id == stream_id.removeprefix(TERMINAL_STREAM_PREFIX))
            out = {r.card_id: StreamHead(r.card_id, r.version, r.last_hash) for r in conn.execute(qc)}
            for r in conn.execute(qt):
                sid = terminal_stream(r.terminal_id)
                out[sid] = StreamHead(sid, r.version, r.last_hash)
        return out

    def first_broken_link(
        self, integrity: IntegrityKeys, stream_id: str | None = None, progress: Callable[[int], None] | None = None
    ) -> BrokenLink | None:
        """The first problem, by position: a keyed link that does not check,
        a stream that does not end at its head, or (for the whole store) a
        position missing between 1 and the log head."""
        key = integrity.key_or_none
        if stream_id is not None:
            head = self.heads(stream_id).get(stream_id, StreamHead(stream_id, 0, GENESIS_HASH))
            return first_broken_link([e.link() for e in self.log.stream(stream_id)], key, head)
        streams: dict[str, list[Link]] = {}
        gap = None
        expected = 1
        for n, e in enumerate(self.log.all_events(), 1):
            if progress is not None and n % 10_000 == 0:
                progress(n)
            if gap is None and e.position != expected:
                gap = BrokenLink(e.stream_id, e.version, expected, f"position {expected} is missing from the log")
            expected = e.position + 1
            streams.setdefault(e.stream_id, []).append(e.link())
        head_position = self.log.head_position()
        if gap is None and expected - 1 != head_position:
            gap = BrokenLink("", 0, expected, f"the log ends at position {expected - 1} but its head is {head_position}")
        heads = self.heads()
        broken = [gap] if gap else []
        for sid in streams.keys() | heads.keys():
            links = sorted(streams.get(sid, []), key=lambda link: link.envelope["version"])
            if b := first_broken_link(links, key, heads.get(sid, StreamHead(sid, 0, GENESIS_HASH))):
                broken.append(b)
        return min(broken, key=lambda b: (b.position, b.stream_id), default=None)
