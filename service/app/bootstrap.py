"""The composition root: the one place that wires a store, a runner, the
group-commit queue and the app together, from settings or from a test's
own parts (a fake store, a test clock)."""

from __future__ import annotations

from collections.abc import Callable

from service.app.batch import ATTEMPTS, ThreadRunner
from service.app.ports import LeafSink, Store
from service.app.service import PinLife
from service.app.writer import BATCH_DEADLINE, GroupCommitWriter, Runner
from service.app.writer_process import ProcessRunner
from service.clock import Clock, ServiceClock
from service.domain.policy import Policy
from service.keys import KeyRing


def make_runner(
    store: Store,
    keys: KeyRing,
    clock: Clock,
    policy: Policy,
    *,
    writer: str = "thread",
    database_url: str | None = None,
    log_format: str = "json",
    on_writer_death: Callable[[], None] = lambda: None,
    leaves: LeafSink | None = None,
) -> Runner:
    """`thread`: batches on a thread of this process, against `store`,
    telling `leaves` what they commit. `process`: in a writer process with
    its own store on `database_url` (which needs a ServiceClock: it is
    copied into the process) and its own checkpoints; if that process dies,
    `on_writer_death` is called (the server then exits)."""
    if writer == "process":
        if database_url is None or not isinstance(clock, ServiceClock):
            raise ValueError("the writer process needs the database URL and a ServiceClock")
        return ProcessRunner(database_url, keys, clock, policy, ATTEMPTS, log_format, on_death=on_writer_death)
    return ThreadRunner(store, keys, clock, policy, leaves=leaves)


def make_app(
    store: Store,
    keys: KeyRing,
    clock: Clock,
    policy: Policy = Policy(),
    *,
    writer: str = "thread",
    database_url: str | None = None,
    batch_max: int = 256,
    batch_deadline: float = BATCH_DEADLINE,
    log_format: str = "json",
    on_writer_death: Callable[[], None] = lambda: None,
    leaves: LeafSink | None = None,
) -> PinLife:
    runner = make_runner(
        store, keys, clock, policy, writer=writer, database_url=database_url, log_format=log_format,
        on_writer_death=on_writer_death, leaves=leaves,
    )  # fmt: skip
    return PinLife(GroupCommitWriter(runner, max_batch=batch_max, batch_deadline=batch_deadline), clock, policy)
