"""One JSON log line per RPC; no PIN anywhere: not in logs, events, errors,
or any column of any table, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC

import grpc
import pytest
import structlog
from sqlalchemy import MetaData, select

from pinlife.runtime import logs
from pinlife.v1 import common_pb2 as pb

# Distinctive values: none is a year, a time part or a common number.
PINS = {
    pb.PIN_TYPE_RESIDENT_REGISTRY: "7391",
    pb.PIN_TYPE_CARD_INFO_INPUT_SUPPORT: "8264",
    pb.PIN_TYPE_USER_CERTIFICATE: "5917",
    pb.PIN_TYPE_SIGNATURE: "ZQXW7319PLMN",
}
OTHER = ["6048", "3852", "MVKQ8402TRDZ", "WRNG5599XQ", "59173", "zqxw7319plmn"]
SECRETS = list(PINS.values()) + OTHER


def leaks(text: str) -> list[str]:
    """Secrets that occur in text as a whole token (not inside a hex digest or uuid)."""
    return [s for s in SECRETS if re.search(rf"(?<![0-9A-Za-z]){re.escape(s)}(?![0-9A-Za-z])", text, re.IGNORECASE)]


@pytest.fixture
def log_lines():
    buf = io.StringIO()
    logs.configure("json", stream=buf)
    yield buf
    structlog.reset_defaults()


def run_scenario(client) -> list[str]:
    errors = []
    client.enroll("card-L1", PINS)
    client.verify("card-L1", pb.PIN_TYPE_USER_CERTIFICATE, "6048")
    client.verify("card-L1", pb.PIN_TYPE_USER_CERTIFICATE, "5917")
    client.change("card-L1", pb.PIN_TYPE_RESIDENT_REGISTRY, "7391", "3852")
    client.change("card-L1", pb.PIN_TYPE_SIGNATURE, "zqxw7319plmn", "MVKQ8402TRDZ")
    client.change("card-L1", pb.PIN_TYPE_SIGNATURE, "WRNG5599XQ", "MVKQ8402TRDZ")
    for _ in range(4):
        client.verify("card-L1", pb.PIN_TYPE_CARD_INFO_INPUT_SUPPORT, "6048")
    client.status("card-L1")
    for bad in (
        lambda: client.verify("card-L1", pb.PIN_TYPE_USER_CERTIFICATE, "59173"),
        lambda: client.change("card-L1", pb.PIN_TYPE_SIGNATURE, "MVKQ8402TRDZ", "7391"),
        lambda: client.verify("card-none", pb.PIN_TYPE_USER_CERTIFICATE, "5917"),
        lambda: client.enroll("card-L1", PINS),
    ):
        with pytest.raises(grpc.RpcError) as err:
            bad()
        errors.append(f"{err.value.code().name} {err.value.details()} {err.value.trailing_metadata()}")
    return errors


def dump_database(store) -> str:
    meta = MetaData()
    meta.reflect(store.reader)
    out = []
    with store.reader.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                out.append(f"{table.name}: " + " | ".join(str(v) for v in row))
    return "\n".join(out)


def test_one_json_line_per_rpc_with_the_canonical_fields(log_lines, client):
    errors = run_scenario(client)
    assert errors  # the scenario did exercise the error paths
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    rpc_lines = [line for line in lines if line["event"] == "rpc"]
    assert len(rpc_lines) == 15  # every call above, once
    for line in rpc_lines:
        assert {"rpc", "status", "duration_ms", "terminal", "card", "timestamp"} <= line.keys()
        assert line["terminal"] == "e2e-terminal"
    statuses = [(line["rpc"], line["status"]) for line in rpc_lines]
    assert ("VerifyPin", "INVALID_ARGUMENT") in statuses and ("VerifyPin", "NOT_FOUND") in statuses
    assert ("EnrollCard", "ALREADY_EXISTS") in statuses and ("GetPinStatus", "OK") in statuses


def test_no_pin_in_logs_errors_events_or_database(log_lines, client, server):
    errors = run_scenario(client)
    assert leaks(log_lines.getvalue()) == []
    assert leaks("\n".join(errors)) == []
    assert leaks("\n".join(repr(e) for e in server.store.log.all_events())) == []
    dump = dump_database(server.store)
    assert "secrets" in dump and "events" in dump  # the dump did read the tables
    assert leaks(dump) == []


def test_the_leak_detector_finds_a_leak():
    assert leaks('{"event": "rpc", "pin": "5917"}') == ["5917"]
    assert leaks("digest 0a59170b") == []


def test_log_redaction_drops_secret_named_keys():
    event = logs.redact_secrets(None, None, {"pin": "5917", "new_pin": "x", "pin_type": "signature", "digest": "ab"})
    assert event == {"pin": "[redacted]", "new_pin": "[redacted]", "pin_type": "signature", "digest": "[redacted]"}


def test_no_pin_or_inquiry_code_in_the_reset_procedures(log_lines, db_url, keys):
    """Counter reset, a proxy's two visits, the store reservation and the
    kiosk: neither a PIN nor the inquiry's one-time code reaches a log line,
    an error, an event or a column (the code is stored as a keyed hash)."""
    from datetime import datetime

    from pinlife.runtime.clock import ServiceClock
    from pinlife.v1 import counter_service_pb2 as cpb
    from pinlife.v1 import pin_service_pb2 as ppb
    from pinlife.v1 import store_service_pb2 as spb
    from tests.e2e.harness import Client, ThreadedServer

    server = ThreadedServer(db_url, keys, clock=ServiceClock(fixed=datetime(2026, 12, 1, 1, 0, tzinfo=UTC)))
    client = Client(server.target)
    md, card = client.metadata, pb.Document(type=pb.DOCUMENT_TYPE_MY_NUMBER_CARD)
    user, sign = pb.PIN_TYPE_USER_CERTIFICATE, pb.PIN_TYPE_SIGNATURE
    try:
        client.enroll("card-R1", PINS)
        client.counter.ResetPin(
            cpb.ResetPinRequest(
                request_id="reset-0001",
                card_id="card-R1",
                pin_type=user,
                new_pin="6048",
                applicant=pb.APPLICANT_HOLDER,
                documents=[card],
            ),
            metadata=md,
        )
        inquiry = client.counter.RequestProxyReset(
            cpb.RequestProxyResetRequest(
                request_id="proxy-0001",
                card_id="card-R1",
                pin_type=pb.PIN_TYPE_RESIDENT_REGISTRY,
                documents=[card, pb.Document(type=pb.DOCUMENT_TYPE_OTHER_ID)],
            ),
            metadata=md,
        )
        SECRETS.append(inquiry.code)
        second = [card] + [
            pb.Document(type=t)
            for t in (pb.DOCUMENT_TYPE_INQUIRY_FORM, pb.DOCUMENT_TYPE_POWER_OF_ATTORNEY, pb.DOCUMENT_TYPE_PUBLIC_PHOTO_ID)
        ]
        done = client.counter.CompleteProxyReset(
            cpb.CompleteProxyResetRequest(
                request_id="proxy-0002",
                card_id="card-R1",
                pin_type=pb.PIN_TYPE_RESIDENT_REGISTRY,
                inquiry_id=inquiry.inquiry_id,
                code=inquiry.code,
                new_pin="3852",
                documents=second,
            ),
            metadata=md,
        )
        assert done.result == cpb.PROXY_RESET_RESULT_COMPLETED
        errors = []
        with pytest.raises(grpc.RpcError) as err:  # a malformed code: INVALID_ARGUMENT, not echoed
            client.counter.CompleteProxyReset(
                cpb.CompleteProxyResetRequest(
                    request_id="proxy-0003",
                    card_id="card-R1",
                    pin_type=pb.PIN_TYPE_RESIDENT_REGISTRY,
                    inquiry_id=inquiry.inquiry_id,
                    code="59173",
                    new_pin="3852",
                    documents=second,
                ),
                metadata=md,
            )
        errors.append(f"{err.value.details()} {err.value.trailing_metadata()}")
        client.pins.ReserveStoreReset(
            ppb.ReserveStoreResetRequest(request_id="reserve-01", card_id="card-R1", pin_type=sign, proving_pin="6048"),
            metadata=md,
        )
        assert client.store.ResetPin(
            spb.StoreResetPinRequest(
                request_id="kiosk-0001", card_id="card-R1", pin_type=sign, proving_pin="6048", new_pin="MVKQ8402TRDZ"
            ),
            metadata=md,
        ).reset
        assert leaks(log_lines.getvalue()) == []
        assert leaks("\n".join(errors)) == []
        assert leaks("\n".join(repr(e) for e in server.store.log.all_events())) == []
        assert leaks(dump_database(server.store)) == []
    finally:
        SECRETS[:] = list(PINS.values()) + OTHER
        client.close()
        server.close()
