"""Verifier key rotation through the running service: restart with a new
current key; old verifiers still verify and are re-keyed on success."""

from __future__ import annotations

import os

from pinlife.domain.pins import PinType
from pinlife.keys.ring import SecretRef
from pinlife.v1 import common_pb2 as pb
from tests.e2e.harness import Client, ThreadedServer
from tests.keys import ring

USER = pb.PIN_TYPE_USER_CERTIFICATE
SIGN = pb.PIN_TYPE_SIGNATURE


def test_rotation_keeps_old_verifiers_working_and_rekeys_on_success(db_url):
    k1, k2 = os.urandom(32), os.urandom(32)
    old = ThreadedServer(db_url, ring("k1", {"k1": k1}))
    client = Client(old.target)
    client.enroll("card-R1", {USER: "4821", SIGN: "ABC123"})
    client.close()
    old.close()

    new = ThreadedServer(db_url, ring("k2", {"k1": k1, "k2": k2}))
    client = Client(new.target)
    try:
        assert new.store.cards.secret(SecretRef.pin("card-R1", PinType.USER_CERTIFICATE)).key_id == "k1"
        # A wrong PIN does not re-key.
        assert client.verify("card-R1", USER, "0000").check.result == pb.CHECK_RESULT_WRONG_PIN
        assert new.store.cards.secret(SecretRef.pin("card-R1", PinType.USER_CERTIFICATE)).key_id == "k1"
        # The right PIN verifies under the old key and moves to the new one.
        assert client.verify("card-R1", USER, "4821").check.result == pb.CHECK_RESULT_OK
        assert new.store.cards.secret(SecretRef.pin("card-R1", PinType.USER_CERTIFICATE)).key_id == "k2"
        assert new.store.cards.secret(SecretRef.pin("card-R1", PinType.SIGNATURE)).key_id == "k1"  # untouched until used
        assert client.verify("card-R1", USER, "4821").check.result == pb.CHECK_RESULT_OK
        # New PINs are made under the current key.
        assert client.change("card-R1", SIGN, "ABC123", "XYZ789").changed
        assert new.store.cards.secret(SecretRef.pin("card-R1", PinType.SIGNATURE)).key_id == "k2"
    finally:
        client.close()
        new.close()

    # Once no verifier is left under k1, it can be retired.
    assert new.store.cards.secrets_by_key() == {"k2": 2}
    last = ThreadedServer(db_url, ring("k2", {"k2": k2}))
    client = Client(last.target)
    try:
        assert client.verify("card-R1", USER, "4821").check.result == pb.CHECK_RESULT_OK
        assert client.verify("card-R1", SIGN, "XYZ789").check.result == pb.CHECK_RESULT_OK
    finally:
        client.close()
        last.close()
