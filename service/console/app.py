"""The console as an ASGI application (Starlette): routes, templates
(Jinja2, autoescaped), the live tail's server-sent events, and what keeps
a page on the auditor's machine safe.

- Read-only: every route is a GET but one, POST /integrity/run, which runs
  VerifyIntegrity (a read) and is refused unless it comes from this
  console's own pages (its Origin, else its Referer, is this origin).
- Hosts: only the names it was started for (127.0.0.1, localhost, the
  --listen host), so a page elsewhere cannot reach it by DNS rebinding.
- Every answer carries a Content-Security-Policy that allows scripts,
  styles and connections from this origin only (no inline script: chart
  data is a JSON block), no framing, no caching of pages.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import grpc
import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..domain import labels
from ..domain.calendar import TOKYO
from ..runtime import build
from ..v1 import audit_service_pb2 as apb
from . import views
from .client import Reads

HERE = resources.files("pinlife.console")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
KEEPALIVE = 15.0  # seconds between comments on an idle live stream
LIVE_BUFFER = 16  # WatchEvents messages read ahead of the browser


class SecurityHeaders:
    """Pure ASGI middleware (streams pass through untouched): the headers
    above on every answer; pages and data are not cached."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def same_origin(request: Request) -> bool:
    """The request came from a page of this console: its Origin (or, for a
    browser that sends none, its Referer) is this console's origin."""
    host = request.headers.get("host", "")
    own = f"{request.url.scheme}://{host}"
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == own
    referer = request.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}" == own
    return False


class Console:
    """The pages over one `Reads` (the auditor's connection)."""

    def __init__(self, reads: Reads, kept: str | None = None, description: str = "", page_size: int = views.PAGE_SIZE) -> None:
        self.reads, self.page_size = reads, page_size
        self.runs = views.IntegrityRuns(reads, kept)
        self.description = description  # what the console reads, as whom (the header's line)
        self.env = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(version=build.version(), vendor=_vendor_versions(), urlencode=urlencode)
        self.env.globals["with_lang"] = lambda request, lang: urlencode(
            [(k, v) for k, v in request.query_params.multi_items() if k not in ("lang", "token")] + [("lang", lang)]
        )
        self.env.filters["jst"] = lambda at: at.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M:%S")

    # -- rendering
    def lang(self, request: Request) -> labels.Lang:
        asked = request.query_params.get("lang") or request.cookies.get("lang")
        return "ja" if asked == "ja" else "en"

    def page(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        lang = self.lang(request)
        text = self.env.get_template(template).render(
            request=request, lang=lang, path=request.url.path, server=self.reads.server, description=self.description, **context
        )
        response = HTMLResponse(text, status_code=status_code)
        if request.query_params.get("lang") in labels.LANGS:
            response.set_cookie("lang", lang, max_age=365 * 86400, samesite="strict", httponly=True)
        return response

    # -- pages
    async def home(self, request: Request) -> Response:
        return RedirectResponse("/history", status_code=303)

    def history(self, request: Request) -> Response:
        view = views.history(self.reads, request.query_params, self.lang(request), self.page_size)
        more = request.query_params.get("token") and request.headers.get("hx-request")
        return self.page(request, "history_rows.html" if more else "history.html", **view)

    def query(self, request: Request) -> Response:
        q = views.Query.of(request.query_params)
        token = request.query_params.get("token", "")
        run = any(key != "lang" for key in request.query_params)
        view = views.query(self.reads, q, token, self.lang(request), run=run, page_size=self.page_size)
        more = token and request.headers.get("hx-request")
        return self.page(
            request,
            "query_rows.html" if more else "query.html",
            choices=views.choices(self.lang(request)),
            params=q.params(),
            **view,
        )

    def export(self, request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in ("csv", "jsonl"):
            return PlainTextResponse("export as .csv or .jsonl\n", status_code=404)
        q = views.Query.of(request.query_params)
        try:
            lines = views.export(self.reads, q, fmt)
        except views.BadInput as exc:
            return PlainTextResponse(f"{exc}\n", status_code=400)
        except grpc.RpcError as err:
            return PlainTextResponse(f"{views.problem(err)}\n", status_code=502)
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/jsonl; charset=utf-8"
        headers = {"content-disposition": f'attachment; filename="pinlife-events.{fmt}"'}
        return StreamingResponse(lines, media_type=media, headers=headers)

    def live(self, request: Request) -> Response:
        after, error = request.query_params.get("after", ""), ""
        if not after.isdigit():
            try:
                after = str(max(0, views.latest_position(self.reads) - 20))  # the last few, then what comes
            except grpc.RpcError as err:
                after, error = "0", views.problem(err)
        return self.page(request, "live.html", after=after, error=error)

    async def live_stream(self, request: Request) -> Response:
        """Server-sent events: `events` (a JSON list of rows, its id the last
        position: a browser reconnecting sends it back as Last-Event-ID and
        resumes after it), `problem` (a refusal the page shows; it does not
        reconnect). A watch the server ends UNAVAILABLE (stopping, a watcher
        too far behind) ends the stream: the browser comes back after
        `retry` from the last position it got."""
        resume = request.headers.get("last-event-id") or request.query_params.get("after", "0")
        if not resume.isdigit() or int(resume) >= 2**63:
            return PlainTextResponse("after: a position (0 or more)\n", status_code=400)
        return StreamingResponse(
            self._watch(int(resume), self.lang(request)),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def _watch(self, after: int, lang: labels.Lang) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        room = threading.BoundedSemaphore(LIVE_BUFFER)  # the reader waits when the browser is behind
        stopped = threading.Event()
        call = self.reads.watch(apb.WatchEventsRequest(after_position=after, max_events_per_message=views.LIVE_BATCH))

        def put(item: tuple[str, Any]) -> bool:
            while not stopped.is_set():
                if room.acquire(timeout=0.5):
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                    return True
            return False

        def read() -> None:
            try:
                for response in call:
                    if not put(("events", views.live_rows(response, lang))):
                        return
                put(("end", None))
            except grpc.RpcError as err:
                put(("error", err))

        threading.Thread(target=read, name="console-watch", daemon=True).start()
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    kind, value = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    yield ": idle\n\n"
                    continue
                room.release()
                if kind == "events":
                    if value:
                        yield f"id: {value[-1]['position']}\nevent: events\ndata: {orjson.dumps(value).decode()}\n\n"
                    continue
                if kind == "error" and value.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    yield f"event: problem\ndata: {orjson.dumps({'message': views.problem(value)}).decode()}\n\n"
                return
        finally:
            stopped.set()
            call.cancel()  # the server's watcher is freed at once (an auditor may hold only a few)

    def integrity(self, request: Request) -> Response:
        return self.page(
            request,
            "integrity.html",
            checkpoint=views.checkpoint(self.reads),
            kept=self.runs.kept_notes(),
            kept_file=self.runs.kept,
            run=self.runs.current,
            last=self.runs.last,
            phases=views.phase_rows(self.runs.current) if self.runs.current else [],
        )

    async def integrity_run(self, request: Request) -> Response:
        if not same_origin(request):
            return PlainTextResponse("refused: not from this console's own page\n", status_code=403)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))  # a urlencoded form (no multipart parser needed)
        card = (form.get("card") or [""])[0].strip()
        run = self.runs.start(card)
        return self.page(request, "integrity_run.html", run=run, phases=views.phase_rows(run))

    def integrity_progress(self, request: Request) -> Response:
        run = self.runs.get(request.path_params["run_id"])
        if run is None:
            return PlainTextResponse("no such run\n", status_code=404)
        return self.page(request, "integrity_run.html", run=run, phases=views.phase_rows(run))

    def stats(self, request: Request) -> Response:
        view = views.statistics(self.reads, request.query_params, self.lang(request))
        return self.page(request, "stats.html", **view)


def _vendor_versions() -> dict[str, str]:
    record = orjson.loads((HERE / "static" / "vendor" / "vendor.json").read_bytes())
    return {entry["package"]: entry["version"] for entry in record}


def create_app(
    reads: Reads, kept: str | None = None, hosts: Iterable[str] = (), description: str = "", page_size: int = views.PAGE_SIZE
) -> Starlette:
    """The console over `reads`. hosts: the Host names it answers (with
    127.0.0.1, localhost and [::1], any port). page_size: events per page shown."""
    console = Console(reads, kept, description, page_size)
    routes = [
        Route("/", console.home),
        Route("/history", console.history),
        Route("/query", console.query),
        Route("/query/export.{fmt:str}", console.export),
        Route("/live", console.live),
        Route("/live/stream", console.live_stream),
        Route("/integrity", console.integrity),
        Route("/integrity/run", console.integrity_run, methods=["POST"]),
        Route("/integrity/run/{run_id:str}", console.integrity_progress),
        Route("/stats", console.stats),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    allowed = sorted({"127.0.0.1", "localhost", "[::1]", "::1", *hosts})
    app = Starlette(
        routes=routes, middleware=[Middleware(SecurityHeaders), Middleware(TrustedHostMiddleware, allowed_hosts=allowed)]
    )
    app.state.console = console
    return app
