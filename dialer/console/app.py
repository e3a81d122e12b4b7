"""The console's aiohttp application: routes, handlers and the listener it runs on
(docs/console.md). Another window onto the same rows as the CLI: reads come from
`dialer/store/console.py`; steering goes through `dialer.operator.steer` and uploads
through the importer, exactly as `dialer campaign pause` and `dialer campaign
add-contacts --csv` do.

URLs carry ids only; contact filters travel in POST bodies; logs name ids and
counts, never contact data.
"""

from __future__ import annotations

import re
import secrets
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp_sse import sse_response

from dialer.config import ConsoleSettings
from dialer.console import charts, views
from dialer.console.auth import MULTIPART_KEY, Gate, Role, multipart_reader
from dialer.console.live import Event, LiveHub, TooManyClients
from dialer.errors import DatabaseUnavailable, DialerError, ImportRejected
from dialer.export import result_chunks
from dialer.importer import import_csv
from dialer.operator import TRANSITIONS, open_campaign, steer
from dialer.status import idle_reason
from dialer.store.campaigns import CampaignStore
from dialer.store.console import ConsoleStore, ContactFilter
from dialer.store.results import ResultsStore

log = structlog.get_logger(__name__)

HERE: Final = Path(__file__).parent
HANDLERS_KEY: Final[web.AppKey[Handlers]] = web.AppKey("console_handlers")
SHOWN_REPORT_LINES: Final = 500  # import report lines shown on the page; the rest are counted
FORM_MAX_BYTES: Final = 256 * 1024  # sign-in and filter forms; uploads stream separately
CHUNK: Final = 64 * 1024
SECURITY_HEADERS: Final = {
    # Everything is served from here: no inline script or style, no framing.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make browsers send Origin: null
    "X-Frame-Options": "DENY",
}
REGION: Final = re.compile(r"[A-Za-z]{2}")


@dataclass(frozen=True)
class Notice:
    """The outcome of an action, shown at the top of the page."""

    ok: bool
    text: str
    lines: list[str] = field(default_factory=list)
    more: int = 0  # report lines not shown


def _campaign_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["campaign_id"])
    except ValueError:
        raise web.HTTPNotFound(text="no such campaign\n") from None


class Handlers:
    """Every route of the console."""

    def __init__(
        self, settings: ConsoleSettings, store: ConsoleStore, gate: Gate, instance_id: uuid.UUID
    ) -> None:
        self.settings = settings
        self.store = store
        self.gate = gate
        self.instance_id = instance_id
        self.env: jinja2.Environment | None = None
        self.hub = LiveHub(
            self.render_topic,
            interval=settings.refresh_seconds,
            idle_refresh=max(5.0, settings.refresh_seconds),
            max_clients=settings.max_live_clients,
        )

    # ------------------------------------------------------------ rendering

    def _page(
        self, template: str, request: web.Request, context: Mapping[str, Any], status: int = 200
    ) -> web.Response:
        session = self.gate.session(request)
        full = {
            **context,
            "csrf": self.gate.csrf(request),
            "role": session.role.value,
            "operator": session.role is Role.OPERATOR,
            "signed_in": self.gate.credentials.required,
        }
        response = aiohttp_jinja2.render_template(template, request, full, status=status)
        response.headers["Cache-Control"] = "no-store"
        return response

    def _fragment(self, template: str, context: Mapping[str, Any]) -> str:
        assert self.env is not None
        return self.env.get_template(template).render(**context)

    async def render_topic(self, topic: str) -> list[Event]:
        """The live hub's renderer: one snapshot per topic, as SSE events."""
        if topic == "board":
            return [("board", self._fragment("_board.html", {"board": await self.store.board()}))]
        if topic == "instances":
            instances = await self.store.instances()
            context = {"instances": instances, "this_instance": self.instance_id}
            return [("instances", self._fragment("_instances.html", context))]
        campaign_id = uuid.UUID(topic.removeprefix("campaign:"))
        page = await self.store.campaign_page(campaign_id)
        if page is None:
            return []
        html = self._fragment("_campaign_live.html", {"page": page})
        return [("campaign", html), ("status", page.progress.status)]

    # ------------------------------------------------------------ pages

    async def board(self, request: web.Request) -> web.StreamResponse:
        """The campaigns board."""
        return self._page("board.html", request, {"board": await self.store.board()})

    async def instances(self, request: web.Request) -> web.StreamResponse:
        """The running daemons."""
        context = {"instances": await self.store.instances(), "this_instance": self.instance_id}
        return self._page("instances.html", request, context)

    async def campaign(self, request: web.Request) -> web.StreamResponse:
        """One campaign's page."""
        return await self._campaign(request, _campaign_id(request))

    async def _campaign(
        self,
        request: web.Request,
        campaign_id: uuid.UUID,
        *,
        notice: Notice | None = None,
        contact_filter: ContactFilter | None = None,
        status: int = 200,
    ) -> web.StreamResponse:
        page = await self.store.campaign_page(campaign_id)
        if page is None:
            raise web.HTTPNotFound(text="no such campaign\n")
        f = contact_filter or ContactFilter()
        context = {
            "page": page,
            "notice": notice,
            "filter": f,
            "contacts": await self.store.contacts(campaign_id, f),
            "attempts": await self.store.attempts(campaign_id, f),
            "history": await self.store.campaigns().history(campaign_id),
        }
        return self._page("campaign.html", request, context, status=status)

    async def actions(self, request: web.Request) -> web.StreamResponse:
        """The action buttons alone, fetched again by a page when the status changes."""
        page = await self.store.campaign_page(_campaign_id(request))
        if page is None:
            raise web.HTTPNotFound(text="no such campaign\n")
        return self._page("_actions.html", request, {"page": page})

    async def filter(self, request: web.Request) -> web.StreamResponse:
        """The contacts and attempts tables filtered (the filter comes in the body)."""
        campaign_id = _campaign_id(request)
        form = await request.post()
        try:
            offset = max(0, int(str(form.get("offset") or 0)))
        except ValueError:
            offset = 0
        f = ContactFilter(
            search=str(form.get("search") or "")[:100],
            disposition=str(form.get("disposition") or "")[:50],
            outcome=str(form.get("outcome") or "")[:50],
            offset=offset,
        )
        return await self._campaign(request, campaign_id, contact_filter=f)

    async def export(self, request: web.Request) -> web.StreamResponse:
        """The campaign's results as CSV, streamed: the same file as `dialer campaign
        export` (`?excel=1`: the spreadsheet flavour of `--excel`)."""
        campaign_id = _campaign_id(request)
        excel = request.query.get("excel") == "1"
        async with self.store.connection() as conn:
            campaign = await CampaignStore(conn).get(campaign_id)
            if campaign is None:
                raise web.HTTPNotFound(text="no such campaign\n")
            response = web.StreamResponse(
                headers={
                    **SECURITY_HEADERS,
                    "Content-Type": "text/csv; charset=utf-8",
                    "Content-Disposition": f'attachment; filename="campaign-{campaign_id}.csv"',
                    "Cache-Control": "no-store",
                }
            )
            await response.prepare(request)
            rows = 0
            chunks = result_chunks(
                ResultsStore(conn), campaign, excel=excel, default_timezone=self.store.default_timezone
            )
            async for text, n in chunks:
                await response.write(text.encode())
                rows += n
        await response.write_eof()
        log.info("console_export", campaign_id=str(campaign_id), rows=rows, excel=excel)
        return response

    # ------------------------------------------------------------ actions

    async def action(self, request: web.Request) -> web.StreamResponse:
        """Start, pause, resume or cancel, through the CLI's own steering."""
        campaign_id = _campaign_id(request)
        command = request.match_info["action"]
        if command not in TRANSITIONS:
            raise web.HTTPNotFound(text="no such action\n")
        form = await request.post()
        if command == "cancel" and form.get("confirm") != "yes":
            notice = Notice(False, "Cancelling is final: tick the box to confirm.")
            return await self._campaign(request, campaign_id, notice=notice, status=400)
        try:
            target = await steer(self.store.campaigns(), campaign_id, command)
        except DatabaseUnavailable:
            raise
        except DialerError as exc:
            log.info("console_action_refused", campaign_id=str(campaign_id), command=command)
            return await self._campaign(request, campaign_id, notice=Notice(False, str(exc)), status=409)
        log.info("console_action", campaign_id=str(campaign_id), command=command, status=target)
        notice = Notice(True, f"The campaign is now {target}.")
        return await self._campaign(request, campaign_id, notice=notice)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """A CSV file imported into the campaign by the importer the CLI uses."""
        campaign_id = _campaign_id(request)
        reader = request.get(MULTIPART_KEY) or await multipart_reader(request)
        with tempfile.TemporaryDirectory(prefix="dialer-upload-") as tmp:
            path = Path(tmp) / "upload.csv"
            try:
                region = await self._read_upload(reader, path)
            except _UploadRefused as exc:
                notice = Notice(False, str(exc))
                return await self._campaign(request, campaign_id, notice=notice, status=exc.status)
            lines: list[str] = []
            try:
                async with self.store.connection() as conn:
                    await open_campaign(conn, campaign_id)
                    result = await import_csv(
                        conn, path, campaign_id=campaign_id, default_region=region, report=lines.append
                    )
            except DatabaseUnavailable:
                raise
            except (ImportRejected, DialerError) as exc:
                # The importer names its temporary path; the operator knows the file as "the file".
                text = str(exc).replace(str(path), "the file")
                return await self._campaign(request, campaign_id, notice=Notice(False, text), status=400)
        log.info(
            "console_import",
            campaign_id=str(campaign_id),
            new=result.new,
            existing=result.existing,
            rejected=result.rejected,
            linked=result.linked,
            updated=result.updated,
        )
        summary = result.summary().replace(" (see above)", "") + f"; {result.linked} linked into the campaign"
        if result.updated:
            # As the CLI says it: a re-import changed this campaign's data of contacts already in it.
            summary += f"; updated the fields of {result.updated} already in it"
        notice = Notice(
            True, summary, lines[:SHOWN_REPORT_LINES], more=max(0, len(lines) - SHOWN_REPORT_LINES)
        )
        return await self._campaign(request, campaign_id, notice=notice)

    async def _read_upload(self, reader: MultipartReader, path: Path) -> str | None:
        """Stream the form's file to `path` (bounded); return its default region."""
        region: str | None = None
        received = False
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise _UploadRefused("nested multipart forms are not accepted", 400)
            if part.name == "default_region":
                text = (await part.text()).strip()
                if text and not REGION.fullmatch(text):
                    raise _UploadRefused(f"{text[:20]!r} is not a two-letter country code such as ES", 400)
                region = text.upper() or None
            elif part.name == "file":
                size = 0
                with path.open("wb") as out:
                    while chunk := await part.read_chunk(CHUNK):
                        size += len(chunk)
                        if size > self.settings.max_upload_bytes:
                            limit = self.settings.max_upload_bytes
                            raise _UploadRefused(
                                f"the file is larger than {limit:,} bytes (console.max_upload_bytes); "
                                "import it with `dialer campaign add-contacts --csv`",
                                413,
                            )
                        out.write(chunk)
                received = size > 0
            else:
                await part.release()
        if not received:
            raise _UploadRefused("choose a CSV file to upload", 400)
        return region

    # ------------------------------------------------------------ live

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events of one topic until the client goes or the hub stops."""
        kind = request.match_info["kind"]
        if kind == "campaigns":
            topic = f"campaign:{_campaign_id(request)}"
        elif kind in ("board", "instances"):
            topic = kind
        else:
            raise web.HTTPNotFound()
        session = self.gate.session(request)
        try:
            async with self.hub.subscribe(topic) as mailbox, sse_response(request) as stream:
                while (events := await mailbox.next()) is not None:
                    for event, data in events:
                        await stream.send(data, event=event)
                    if session.expires <= time.time():
                        break  # the session ended: the page's next request signs in again
                return stream
        except TooManyClients as exc:
            return web.Response(status=503, text=f"{exc}\n", headers={"Retry-After": "30"})

    # ------------------------------------------------------------ sign-in

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        """The sign-in page (straight to the board when no sign-in is configured)."""
        if self.gate.open:
            raise web.HTTPSeeOther(f"{self.gate.base_path}/")
        return self._page("login.html", request, {"error": None})

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Check the secret; a new session (new id) with the role it grants."""
        if self.gate.open:
            raise web.HTTPSeeOther(f"{self.gate.base_path}/")
        client = request.remote or "?"
        if self.gate.limiter.blocked(client):
            return self._page("login.html", request, {"error": "Too many attempts: wait a minute."}, 429)
        form = await request.post()
        role = await self.gate.credentials.role_for(str(form.get("secret") or ""))
        if role is None:
            self.gate.limiter.failed(client)
            log.info("console_sign_in_failed")
            return self._page("login.html", request, {"error": "That token or password is not valid."}, 403)
        log.info("console_signed_in", role=role.value)
        response = web.HTTPSeeOther(f"{self.gate.base_path}/")
        self.gate.set_cookie(response, self.gate.codec.issue(role))
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """Forget the session."""
        response = web.HTTPSeeOther(f"{self.gate.base_path}/login")
        self.gate.set_cookie(response, self.gate.codec.issue(Role.OPERATOR if self.gate.open else Role.NONE))
        raise response


class _UploadRefused(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    started = time.monotonic()
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    except DatabaseUnavailable as exc:
        log.warning("console_database_unavailable", path=request.path, error=str(exc))
        response = web.Response(status=503, text=f"{exc}\n", headers={"Retry-After": "5"})
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    # Paths carry ids only; query strings are never logged.
    log.debug(
        "console_request",
        method=request.method,
        path=request.path,
        status=response.status,
        ms=round((time.monotonic() - started) * 1000, 1),
    )
    return response


def create_app(
    settings: ConsoleSettings,
    store: ConsoleStore,
    *,
    instance_id: uuid.UUID,
    port: int,
    key: bytes | None = None,
) -> web.Application:
    """The console application; its Handlers (and live hub) under HANDLERS_KEY."""
    gate = Gate(settings, key=key or secrets.token_bytes(32), port=port)
    handlers = Handlers(settings, store, gate, instance_id)
    app = web.Application(middlewares=[_headers, gate.middleware], client_max_size=FORM_MAX_BYTES)
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("dialer.console", "templates"),
        autoescape=True,  # every template, every value: names and scripts are operator data
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        base=gate.base_path,
        idle_reason=idle_reason,
        bar_chart=charts.bar_chart,
        timeline_chart=charts.timeline_chart,
        bucket_unit=charts.bucket_unit,
        legend=charts.legend,
        transitions=TRANSITIONS,
        **views.GLOBALS,
    )
    env.filters.update(views.FILTERS)
    handlers.env = env
    app[HANDLERS_KEY] = handlers
    r = app.router
    r.add_get("/", handlers.board, name="board")
    r.add_get("/instances", handlers.instances, name="instances")
    r.add_get("/campaigns/{campaign_id}", handlers.campaign, name="campaign")
    r.add_get("/campaigns/{campaign_id}/actions", handlers.actions, name="actions")
    r.add_get("/campaigns/{campaign_id}/export.csv", handlers.export, name="export")
    r.add_post("/campaigns/{campaign_id}/contacts", handlers.filter, name="filter")
    r.add_post("/campaigns/{campaign_id}/actions/{action}", handlers.action, name="action")
    r.add_post("/campaigns/{campaign_id}/upload", handlers.upload, name="upload")
    r.add_get("/events/{kind}", handlers.events, name="events")
    r.add_get("/events/{kind}/{campaign_id}", handlers.events, name="events_campaign")
    r.add_get("/login", handlers.login_form, name="login_form")
    r.add_post("/login", handlers.login, name="login")
    r.add_post("/logout", handlers.logout, name="logout")
    r.add_static("/static", HERE / "static", name="static")
    return app
