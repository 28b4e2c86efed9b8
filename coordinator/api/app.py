"""``create_app(settings)``: the FastAPI application, its lifespan and its error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Scope

from coordinator.api import admin_routes, dashboard_routes, device_routes, registry_routes
from coordinator.api.limits import RequestEdges
from coordinator.api.offload import Offload
from coordinator.api.shedding import AdmissionControl, Backlog
from coordinator.db.migrate import upgrade
from coordinator.db.session import make_engine, make_session_factory
from coordinator.errors import CoordinatorError, RateLimited
from coordinator.observability import Telemetry
from coordinator.ratelimit import make_rate_limiter
from coordinator.services.maintenance import sweep
from coordinator.settings import Settings
from fedge.clock import Clock, SystemClock
from fedge.protocol import Reason

log = logging.getLogger("fedge.coordinator")


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    engine: Engine | None = None,
    background_sweep: bool = True,
    inline_blocking: bool = False,
    sessions: sessionmaker[Session] | None = None,
) -> FastAPI:
    """Build the service; the database schema is upgraded to the latest migration at start-up.

    ``inline_blocking`` runs the device routes' database work on the event loop instead of a
    threadpool: only for a caller that sends one request at a time (the simulator's bridge).
    ``sessions`` replaces the factory of sessions on ``engine`` (the simulator's, bound to the
    one connection whose transaction it groups requests in).
    """
    clock = clock or SystemClock()
    engine = engine or make_engine(settings.db_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upgrade(engine)
        task = asyncio.create_task(_sweep_forever(app)) if background_sweep else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        title="Fedge coordinator",
        version="1",
        description="Federated learning for fleets of edge devices: device protocol and admin API.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.engine = engine
    app.state.sessions = sessions or make_session_factory(engine)
    app.state.offload = Offload(inline=inline_blocking, priority_threads=settings.priority_threads)
    app.state.backlog = Backlog()
    app.state.limiter = make_rate_limiter(settings.rate_limit_per_minute, settings.rate_limit_url)
    app.state.telemetry = Telemetry(app.state.sessions)
    if settings.admin_token is not None:
        app.state.admin_token = settings.admin_token.get_secret_value()
    else:
        app.state.admin_token = secrets.token_urlsafe(32)
        log.warning("no FEDGE_ADMIN_TOKEN set; this run's admin token: %s", app.state.admin_token)
    app.include_router(device_routes.router)
    app.include_router(admin_routes.router)
    dashboard_routes.install(app)  # /dashboard and its JSON twins under /v1/admin
    app.include_router(registry_routes.router)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(app.state.telemetry.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(_TimeRequests, telemetry=app.state.telemetry)
    app.add_middleware(RequestEdges, json_limit=settings.max_json_body_bytes)
    # Outermost: arrival stamped first, check-ins shed before any other work (api/shedding.py).
    app.add_middleware(
        AdmissionControl,
        clock=clock,
        backlog=app.state.backlog,
        limit=settings.shed_check_ins_above,
        retry_after=settings.shed_retry_after_seconds,
        registry=app.state.telemetry.registry,
    )

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.exception_handler(CoordinatorError)
    async def _domain_error(_: Request, error: CoordinatorError) -> JSONResponse:
        headers = {}
        if isinstance(error, RateLimited):
            headers["Retry-After"] = str(max(1, round(error.retry_after)))
        return JSONResponse(
            status_code=error.status_code,
            content={"error": error.reason, "message": error.message},
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        return JSONResponse(
            status_code=422, content={"error": Reason.INVALID_REQUEST, "message": problems}
        )

    @app.exception_handler(HTTPException)
    async def _framework_error(request: Request, error: HTTPException) -> JSONResponse:
        """Starlette's own answers (unknown route 404, 405, body parse 400) in the one shape."""
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(app, request.scope))
        return JSONResponse(
            status_code=error.status_code,
            content={"error": _reason(error.status_code), "message": str(error.detail)},
            headers=headers,
        )

    return app


def _reason(status_code: int) -> str:
    """``405`` -> ``method_not_allowed``: the status's phrase as a machine-readable reason."""
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


def _allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at this path; Starlette's own ``Allow`` names one route's."""
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**scope, "method": method})[0] is Match.FULL
            for route in app.router.routes
        )
    ]


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


async def _sweep_forever(app: FastAPI) -> None:
    """Expire silent leases and overdue rounds, so nothing waits on a dead device.

    Leases get the backlog's slack: none is expired while a request that arrived in its
    lifetime still waits in this process (:meth:`Backlog.slack`).
    """
    settings: Settings = app.state.settings
    backlog: Backlog = app.state.backlog
    while True:
        await asyncio.sleep(settings.expiry_sweep_seconds)
        try:
            now = app.state.clock.now()
            slack = backlog.slack(now)
            await asyncio.to_thread(sweep, app.state.sessions, now=now, slack=slack)
        except Exception:  # keep sweeping; a failed sweep is retried on the next tick
            log.exception("lease sweep failed")


class _TimeRequests:
    """Times each request by its route template, as plain ASGI middleware.

    Starlette's ``@app.middleware("http")`` wraps every request in extra tasks and streams; as
    plain ASGI this costs one clock read each side (a third of the in-process request time in
    the simulator's profile went to that wrapper).
    """

    def __init__(self, app: Any, *, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.telemetry.request_seconds.labels(path).observe(time.perf_counter() - started)
