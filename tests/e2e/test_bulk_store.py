"""The growth bench's bulk loader (bench/bulk.py) writes authentic stores:
what it wrote passes the whole-store integrity check (`pinlife check`),
with signed checkpoints and without, and a server started on it answers."""

from __future__ import annotations

import uuid

import pytest

from bench.bulk import BulkSpec, bulk_load
from bench.common import PB_USER_CERTIFICATE, card_id, pins_for
from pinlife.keys.ring import KeyRing, write_new_key_file
from pinlife.store.check import check_store
from pinlife.store.checkpoints import signed_size
from pinlife.store.event_store import EventStore
from pinlife.v1 import common_pb2
from pinlife.v1 import pin_service_pb2 as ppb
from tests.e2e.harness import Client, ThreadedServer

CARDS = 50


@pytest.mark.parametrize("checkpoints", [True, False], ids=["checkpoints", "no-checkpoints"])
def test_a_bulk_loaded_store_is_intact_and_served(db_url, tmp_path, checkpoints):
    key_file = tmp_path / "keys.json"
    write_new_key_file(key_file)
    keys = KeyRing.load(key_file)
    spec = BulkSpec(db_url, key_file, CARDS, chunk=20, workers=1, checkpoints=checkpoints, checkpoint_every=60)
    report = bulk_load(spec)
    assert report.cards == CARDS and report.events >= 3 * CARDS

    store = EventStore(db_url)
    try:
        r = check_store(store, keys)
        assert r.intact, r
        assert (r.cards, r.events, r.head_position) == (CARDS, report.events, report.events)
        assert r.stored_checkpoints == (report.checkpoints if checkpoints else 0)
        assert signed_size(store, keys) == (report.events if checkpoints else 0)
    finally:
        store.close()

    server = ThreadedServer(db_url, keys)
    client = Client(server.target, terminal="bulk-test-reader")
    try:
        i = CARDS - 1  # a verify card's user-certificate PIN is the one it was enrolled with
        request = ppb.VerifyPinRequest(
            request_id=str(uuid.uuid4()), card_id=card_id(i), pin_type=PB_USER_CERTIFICATE, pin=pins_for(i).user_certificate
        )
        answer = client.pins.VerifyPin(request, metadata=client.metadata, timeout=10)
        assert answer.check.result == common_pb2.CHECK_RESULT_OK
    finally:
        client.close()
        server.close()
