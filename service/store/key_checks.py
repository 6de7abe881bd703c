"""Key check values (service/keys/ring.py): each key id's check value is kept in
the database at first use; at start, a loaded key whose check value differs
from the stored one is refused, because a different key under a known id
would turn every correct PIN into a wrong one (and lock cards), or make
every MAC fail. Also refused: a store with events not yet keyed."""

from __future__ import annotations

import hmac
from datetime import datetime

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select

from ..keys.ring import KeyRing
from .event_store import EventStore
from .rechain import unkeyed_events
from .tables import key_checks, secrets

WHAT = {"verifier": "verifier key", "integrity": "integrity key", "checkpoint": "checkpoint signing key of origin"}


def key_problems(store: EventStore, keys: KeyRing, now: datetime, *, record: bool = True) -> list[str]:
    """What stops this store being served with these keys (every problem,
    each a sentence); records the check values of keys used for the first
    time (unless record is False: `pinlife config check --connect`)."""
    stored = _stored(store)
    problems = key_mismatches(store, keys, stored)
    values = keys.check_values()
    new = [
        dict(purpose=purpose, key_id=key_id, check_value=value, created_at=now)
        for (purpose, key_id), value in sorted(values.items())
        if (purpose, key_id) not in stored
    ]
    if unkeyed_events(store):
        problems.append("the store holds events chained before keyed chains: run `pinlife migrate` with the key file")
    if not problems and new and record:
        try:
            with store.writer.begin() as conn:
                conn.execute(key_checks.insert(), new)
        except sa_exc.IntegrityError:
            return key_problems(store, keys, now)  # another instance recorded them first: compare with theirs
    return problems


def key_mismatches(store: EventStore, keys: KeyRing, stored: dict[tuple[str, str], str] | None = None) -> list[str]:
    """The keys of this key file that are not the ones this store was used
    with, each named by its id (a sentence each); read only."""
    problems = []
    values = keys.check_values()
    stored = _stored(store) if stored is None else stored
    for (purpose, key_id), value in sorted(values.items()):
        known = stored.get((purpose, key_id))
        if known is not None and not hmac.compare_digest(known, value):
            problems.append(
                f"the {WHAT[purpose]} {key_id!r} is not the key this store was used with (its check value differs): "
                "restore the key file that holds it; a new key needs a new id"
            )
    if not any(p == "checkpoint" for p, _ in values) and any(p == "checkpoint" for p, _ in stored):
        problems.append("the key file has no checkpoint key, but this store's checkpoints were signed with one")
    return problems


def _stored(store: EventStore) -> dict[tuple[str, str], str]:
    with store.reader.begin() as conn:
        q = select(key_checks.c.purpose, key_checks.c.key_id, key_checks.c.check_value)
        return {(r.purpose, r.key_id): r.check_value for r in conn.execute(q)}


def has_verifiers(store: EventStore) -> bool:
    with store.reader.begin() as conn:
        return conn.execute(select(func.count()).select_from(select(secrets.c.card_id).limit(1).subquery())).scalar_one() > 0
