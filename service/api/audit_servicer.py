"""AuditService: translates requests to the audit facade
(service/app/audit.py) and its answers to protos (audit_mapping.py)."""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc

from ..app.audit import Audit
from ..app.handlers import Caller
from ..app.ports import IntegrityViolation
from ..app.service import PinLife
from ..domain.log import LoggedEvent
from ..keys.notes import NoteError, open_note, parse_checkpoint
from ..v1 import audit_service_pb2 as apb
from ..v1 import audit_service_pb2_grpc as audit_grpc
from . import audit_mapping as amap
from .auth import development_caller
from .servicers import Gate, _Base, rpc, rpc_stream

if TYPE_CHECKING:  # prometheus_client is loaded only with metrics on
    from ..runtime.metrics import Metrics
    from ..runtime.tracing import Tracing

AUDIT_SERVICE = apb.DESCRIPTOR.services_by_name["AuditService"].full_name
PROGRESS_EVERY_S = 0.5
ENCODED_MESSAGES = 4096  # WatchEvents messages kept encoded for the next watcher


class AuditServicer(_Base, audit_grpc.AuditServiceServicer):
    def __init__(
        self,
        app: PinLife,
        audit: Audit,
        identify: Callable[[grpc.aio.ServicerContext], Caller] = development_caller,
        gate: Gate | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ):
        super().__init__(app, identify, gate, metrics, tracing)
        self.audit = audit
        self._messages: OrderedDict[tuple[int, int, bool], bytes] = OrderedDict()  # WatchEvents messages, by their events

    @rpc(AUDIT_SERVICE, "GetCardHistory")
    async def GetCardHistory(self, request: apb.GetCardHistoryRequest, caller: Caller) -> apb.GetCardHistoryResponse:
        f = amap.event_filter(request.filter)
        proofs = request.proof_tree_size if request.with_proofs else None
        page = await self.audit.history(
            caller, request.card_id, f, amap.order(request.order), request.page_size, request.page_token, proofs
        )
        events = []
        for e in page.events:
            out = amap.event(e)
            if (proof := page.proofs.get(e.position)) is not None:
                out.proof.CopyFrom(amap.leaf_proof(proof))
            events.append(out)
        return apb.GetCardHistoryResponse(
            events=events,
            next_page_token=page.next_token,
            stream_version=page.stream_version,
            proof_tree_size=page.proof_tree_size,
        )

    @rpc(AUDIT_SERVICE, "QueryEvents")
    async def QueryEvents(self, request: apb.QueryEventsRequest, caller: Caller) -> apb.QueryEventsResponse:
        f = amap.event_filter(request.filter, request.stream_kind)
        page = await self.audit.query(caller, f, amap.order(request.order), request.page_size, request.page_token)
        return apb.QueryEventsResponse(events=[amap.event(e) for e in page.events], next_page_token=page.next_token)

    @rpc_stream(AUDIT_SERVICE, "WatchEvents")
    async def WatchEvents(  # type: ignore[override]  # it yields encoded messages: registration.py sends bytes as they are
        self, request: apb.WatchEventsRequest, caller: Caller
    ) -> AsyncIterator[apb.WatchEventsResponse | bytes]:
        per_message = amap.events_per_message(request.max_events_per_message)
        several = request.max_events_per_message > 1
        metrics = self.metrics
        if metrics is not None:
            metrics.watch_subscribers.inc()
        try:
            async for events in self.audit.watch(caller, request.after_position):
                for i in range(0, len(events), per_message):
                    chunk = events[i : i + per_message]
                    yield self._encoded(chunk, several)
                    if metrics is not None:  # once per message (its oldest event), not per event and watcher
                        metrics.delivered(chunk[0].occurred_at)
        finally:
            if metrics is not None:
                metrics.watch_subscribers.dec()

    def _encoded(self, chunk: list[LoggedEvent], several: bool) -> bytes:
        """One message's bytes, made once for every watcher at the log's
        live edge (they are handed the same pages by the log follower)."""
        key = (chunk[0].position, chunk[-1].position, several)
        data = self._messages.get(key)
        if data is None:
            if several:
                message = apb.WatchEventsResponse(events=[amap.event(e) for e in chunk])
            else:
                message = apb.WatchEventsResponse(event=amap.event(chunk[0]))
            data = self._messages[key] = message.SerializeToString()
            while len(self._messages) > ENCODED_MESSAGES:
                self._messages.popitem(last=False)
        return data

    @rpc_stream(AUDIT_SERVICE, "VerifyIntegrity")
    async def VerifyIntegrity(
        self, request: apb.VerifyIntegrityRequest, caller: Caller
    ) -> AsyncIterator[apb.VerifyIntegrityResponse]:
        async for kind, value in self.audit.verify(caller, request.card_id, list(request.checkpoints)):
            if kind == "progress":
                phase, done, total = value
                yield apb.VerifyIntegrityResponse(progress=apb.IntegrityProgress(phase=phase, done=done, total=total))
            else:
                yield apb.VerifyIntegrityResponse(report=amap.integrity_report(value))

    @rpc(AUDIT_SERVICE, "GetCheckpoint")
    async def GetCheckpoint(self, request: apb.GetCheckpointRequest, caller: Caller) -> apb.GetCheckpointResponse:
        note, verifier_key = await self.audit.checkpoint(caller)
        try:
            body, _ = open_note(note, [verifier_key])
            cp = parse_checkpoint(body)
        except NoteError as exc:
            raise IntegrityViolation("checkpoints", f"the latest stored checkpoint does not verify: {exc}") from exc
        return apb.GetCheckpointResponse(
            note=note,
            origin=cp.origin,
            tree_size=cp.size,
            root_hash=base64.b64encode(cp.root).decode(),
            verifier_key=verifier_key,
        )

    @rpc(AUDIT_SERVICE, "GetStatistics")
    async def GetStatistics(self, request: apb.GetStatisticsRequest, caller: Caller) -> apb.GetStatisticsResponse:
        stats = await self.audit.statistics(
            caller,
            amap.time(getattr(request, "from"), request.HasField("from"), "from"),
            amap.time(request.to, request.HasField("to"), "to"),
            amap.granularity(request.granularity),
            request.top_terminals,
        )
        return amap.statistics(stats)

    @rpc(AUDIT_SERVICE, "GetInclusionProof")
    async def GetInclusionProof(self, request: apb.GetInclusionProofRequest, caller: Caller) -> apb.GetInclusionProofResponse:
        proof = await self.audit.inclusion_proof(caller, request.position, request.tree_size)
        return apb.GetInclusionProofResponse(
            leaf_index=proof.leaf_index, tree_size=proof.tree_size, audit_path=list(proof.path), leaf_hash=proof.leaf_hash
        )

    @rpc(AUDIT_SERVICE, "GetConsistencyProof")
    async def GetConsistencyProof(
        self, request: apb.GetConsistencyProofRequest, caller: Caller
    ) -> apb.GetConsistencyProofResponse:
        path = await self.audit.consistency_proof(caller, request.first_size, request.second_size)
        return apb.GetConsistencyProofResponse(
            first_size=request.first_size, second_size=request.second_size, consistency_path=path
        )
