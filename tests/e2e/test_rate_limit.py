"""The request-rate limit over a real channel, on SQLite and PostgreSQL:
mutual TLS, a medical reader limited to 1/min with a burst of 3, flooded
with 40 wrong-PIN verifies at once from four connections: exactly 3 are
admitted, the rest are RESOURCE_EXHAUSTED with RetryInfo and append
nothing (no try is spent), counted in pinlife_rate_limited_total; another
reader is unaffected. And development mode, where the limit is off unless
set. The rule and the gate: tests/unit/test_rate.py, tests/unit/test_api_rate.py."""

from __future__ import annotations

import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from pinlife.config.access import load_access_config
from pinlife.domain.rate import MAX_EVENTS_PER_CALL
from pinlife.domain.streams import terminal_stream
from tests.e2e.harness import Client, ThreadedServer
from tests.e2e.test_access import OPEN_HOURS, Pki
from tests.rpc import USER

READER, OTHER_READER = "medical_reader-01", "medical_reader-02"
EXTRA_TERMINALS = f'[terminals.{OTHER_READER}]\nrole = "medical_reader"\n'


@pytest.fixture
def terminals(tmp_path) -> Pki:
    return Pki(tmp_path)


def retry_delay(err: grpc.RpcError) -> float:
    for detail in rpc_status.from_call(err).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError("no RetryInfo")


def test_a_flooding_terminal_gets_its_burst_and_nothing_more(db_url, keys, terminals: Pki):
    pki = terminals
    path = pki.access_file(EXTRA_TERMINALS)
    server = ThreadedServer(
        db_url,
        keys,
        clock=OPEN_HOURS,
        access=load_access_config(path),
        access_file=path,
        metrics=True,
        rates={"rate_medical_reader": "1/min burst 3"},
    )
    counter = Client(server.target, credentials=pki.credentials("ward_office-01"))
    readers = [Client(server.target, credentials=pki.credentials(READER)) for _ in range(4)]
    other = Client(server.target, credentials=pki.credentials(OTHER_READER))
    try:
        counter.enroll("card-F1", {USER: "4821"})
        before = server.store.log.head_position()

        def wrong(i: int):
            try:
                readers[i % 4].verify("card-F1", USER, "0000")
                return grpc.StatusCode.OK, None
            except grpc.RpcError as err:
                return err.code(), err

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(wrong, range(40)))
        codes = Counter(code for code, _ in results)
        assert codes == {grpc.StatusCode.OK: 3, grpc.StatusCode.RESOURCE_EXHAUSTED: 37}
        for code, err in results:
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert 0 < retry_delay(err) <= 60
                assert "over the request rate of its role medical_reader (1/min burst 3)" in err.details()
        # only the three admitted calls appended: their failed tries (and the lock)
        appended = server.store.log.head_position() - before
        assert 3 <= appended <= 3 * MAX_EVENTS_PER_CALL
        card = [e.event_type for e in server.store.log.stream("card-F1")]
        assert card.count("PinVerificationFailed") == 3
        assert server.store.log.stream(terminal_stream(READER)) == []  # a rate-limited call records nothing

        # another reader is unaffected (the card is locked by now: it is told so)
        assert other.verify("card-F1", USER, "4821").check.remaining_tries == 0
        assert counter.status("card-F1").card_id == "card-F1"  # and another role

        with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
            text = response.read().decode()
        assert 'pinlife_rate_limited_total{channel="medical_reader"} 37.0' in text
        assert (
            'grpc_server_handled_total{grpc_code="RESOURCE_EXHAUSTED",grpc_method="VerifyPin",'
            'grpc_service="pinlife.v1.PinService",grpc_type="unary"} 37.0' in text
        )
    finally:
        for c in (counter, other, *readers):
            c.close()
        server.close()


def test_development_mode_is_unlimited_unless_a_rate_is_set(db_url, keys):
    server = ThreadedServer(db_url, keys)
    client = Client(server.target, terminal="dev-01")
    try:
        client.enroll("card-D1", {USER: "4821"})
        for _ in range(60):
            client.status("card-D1")
    finally:
        client.close()
        server.close()
    server = ThreadedServer(db_url, keys, rates={"rate_development": "1/h burst 2"})
    client, other = Client(server.target, terminal="dev-01"), Client(server.target, terminal="dev-02")
    try:
        client.status("card-D1")
        client.status("card-D1")
        try:
            client.status("card-D1")
            raise AssertionError("admitted over its rate")
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert 3590 < retry_delay(err) <= 3600
        assert other.status("card-D1").card_id == "card-D1"
    finally:
        client.close()
        other.close()
        server.close()
