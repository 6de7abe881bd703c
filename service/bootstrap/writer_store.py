"""What a writer process opens, in a module of its own: the value is
unpickled in the writer process, which then imports this module and the
store, nothing of the server (gRPC, the API, the configuration)."""

from __future__ import annotations

from dataclasses import dataclass

from ..app.ports import LeafSink, Store
from ..keys.ring import KeyRing
from ..runtime.clock import Clock
from ..store.checkpoints import CheckpointSigner
from ..store.event_store import EventStore


@dataclass(frozen=True)
class WriterStore:
    """What a writer process opens: its own store on the database, and the
    signer of its checkpoints (the instance's: see Instance). A plain value,
    so that it can be pickled into the process."""

    database_url: str

    def __call__(self, keys: KeyRing, clock: Clock) -> tuple[Store, LeafSink | None]:
        store = EventStore(self.database_url)
        return store, CheckpointSigner(store, keys, clock)
