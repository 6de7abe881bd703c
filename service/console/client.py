"""What the console reads, and how: `Reads` is the port (the views call
nothing else; tests/unit/test_console_views.py gives them a fake), and
`GrpcReads` calls the server over the auditor CLI's own channel and
metadata (service/cli/client.py: mutual TLS with --ca/--cert/--key, or the
development headers), so every read is the auditor's, authorised and
recorded as the CLI's are. Only reads: AuditService and
PinService.GetPinStatus (which the auditor role may call); no stub of a
service that changes state is made here."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Protocol

from ..cli.client import channel, metadata
from ..v1 import audit_service_pb2 as apb
from ..v1 import audit_service_pb2_grpc, pin_service_pb2_grpc
from ..v1 import pin_service_pb2 as ppb

CALL_TIMEOUT = 30.0  # seconds, a unary call (the CLI's default)


class Stream(Protocol):
    """A server-streaming call: its answers, and cancel() to end it (from any thread)."""

    def __iter__(self) -> Iterator: ...

    def cancel(self) -> bool: ...


class Reads(Protocol):
    server: str  # the address read, as given (the kept checkpoints are by server)

    def history(self, request: apb.GetCardHistoryRequest) -> apb.GetCardHistoryResponse: ...

    def query(self, request: apb.QueryEventsRequest) -> apb.QueryEventsResponse: ...

    def watch(self, request: apb.WatchEventsRequest) -> Stream: ...

    def verify(self, request: apb.VerifyIntegrityRequest) -> Stream: ...

    def checkpoint(self) -> apb.GetCheckpointResponse: ...

    def statistics(self, request: apb.GetStatisticsRequest) -> apb.GetStatisticsResponse: ...

    def pin_status(self, card_id: str) -> ppb.GetPinStatusResponse: ...


class GrpcReads:
    """Reads over one channel of the CLI's client module (the command's args)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.server = args.server
        self._metadata = tuple(metadata(args))
        self._audit = audit_service_pb2_grpc.AuditServiceStub(channel(args))
        self._pins = pin_service_pb2_grpc.PinServiceStub(channel(args))

    def _unary(self) -> dict:
        return {"timeout": CALL_TIMEOUT, "metadata": self._metadata}

    def history(self, request: apb.GetCardHistoryRequest) -> apb.GetCardHistoryResponse:
        return self._audit.GetCardHistory(request, **self._unary())

    def query(self, request: apb.QueryEventsRequest) -> apb.QueryEventsResponse:
        return self._audit.QueryEvents(request, **self._unary())

    def watch(self, request: apb.WatchEventsRequest) -> Stream:
        return self._audit.WatchEvents(request, metadata=self._metadata)  # as long as the page follows it

    def verify(self, request: apb.VerifyIntegrityRequest) -> Stream:
        return self._audit.VerifyIntegrity(request, metadata=self._metadata)

    def checkpoint(self) -> apb.GetCheckpointResponse:
        return self._audit.GetCheckpoint(apb.GetCheckpointRequest(), **self._unary())

    def statistics(self, request: apb.GetStatisticsRequest) -> apb.GetStatisticsResponse:
        return self._audit.GetStatistics(request, **self._unary())

    def pin_status(self, card_id: str) -> ppb.GetPinStatusResponse:
        return self._pins.GetPinStatus(ppb.GetPinStatusRequest(card_id=card_id), **self._unary())
