"""The operator's dashboard at ``/dashboard`` and its JSON twins in the admin API.

Signed in by the admin token: as ``Authorization: Bearer`` (scripts), or through the login form,
which sets a signed session cookie (:mod:`coordinator.dashboard.cookie`; Secure, HttpOnly,
SameSite=Strict, path ``/dashboard``). Without either, a browser is sent to the login page and
any other client gets 401. The pages render :mod:`coordinator.services.overview`'s records, the
same ones ``GET /v1/admin/overview`` and ``GET /v1/admin/jobs/{id}/overview`` return.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from coordinator.api.deps import Admin, AppClock, Sessions, is_admin_token
from coordinator.api.limits import bearer_token, read_body
from coordinator.api.schemas import MAX_LISTED, Id, error_responses
from coordinator.dashboard import cookie, pages
from coordinator.db.session import transaction
from coordinator.errors import BadRequest, Forbidden, Unauthorized, UnsupportedMediaType
from coordinator.services import overview
from coordinator.services.overview import FleetOverview, JobDetail

HOME = "/dashboard"
LOGIN = "/dashboard/login"
MAX_FORM_BYTES = 4096
FORM = "application/x-www-form-urlencoded"

Limit = Annotated[int, Query(ge=1, le=MAX_LISTED, description="most versions and rounds shown")]


class LoginRequired(Unauthorized):
    """No admin token and no valid session cookie: a browser is sent to the login page."""


async def _signed_in(request: Request, clock: AppClock) -> None:
    authorization = request.headers.get("authorization")
    if authorization is not None:
        if not is_admin_token(request, bearer_token(authorization)):
            raise Forbidden("the dashboard needs the admin token")
        return
    value = request.cookies.get(cookie.NAME)
    admin_token: str = request.app.state.admin_token
    if value and cookie.is_valid(admin_token, value, now=clock.now()):
        return
    raise LoginRequired(f"log in at {LOGIN}, or send 'Authorization: Bearer <admin token>'")


SignedIn = Depends(_signed_in)

router = APIRouter(prefix=HOME, include_in_schema=False)
# The JSON twins: every figure of the pages, for scripts (and the schema).
api = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Admin],
    responses=error_responses(400, 401, 403, 422),
)


@api.get("/overview")
def fleet_overview(sessions: Sessions, clock: AppClock) -> FleetOverview:
    """The fleet: population, device health (lease outcomes, aborts, refusals), every job."""
    with transaction(sessions, read_only=True) as session:
        return overview.fleet_overview(session, now=clock.now())


@api.get("/jobs/{job_id}/overview", responses=error_responses(404))
def job_overview(job_id: Id, sessions: Sessions, clock: AppClock, limit: Limit = 100) -> JobDetail:
    """One job: lease funnel, rounds, staleness, the latest versions' signals, privacy, bytes."""
    with transaction(sessions, read_only=True) as session:
        return overview.job_detail(session, job_id, now=clock.now(), limit=limit)


@router.get("", dependencies=[SignedIn])
def fleet_page(sessions: Sessions, clock: AppClock) -> HTMLResponse:
    """The front page."""
    with transaction(sessions, read_only=True) as session:
        figures = overview.fleet_overview(session, now=clock.now())
    return HTMLResponse(pages.fleet_page(figures), headers=_NO_STORE)


@router.get("/jobs/{job_id}", dependencies=[SignedIn])
def job_page(job_id: Id, sessions: Sessions, clock: AppClock, limit: Limit = 100) -> HTMLResponse:
    """One job's page."""
    with transaction(sessions, read_only=True) as session:
        detail = overview.job_detail(session, job_id, now=clock.now(), limit=limit)
    return HTMLResponse(pages.job_page(detail), headers=_NO_STORE)


@router.get("/login")
def login_form(next: str = HOME) -> HTMLResponse:
    """The login form."""
    return HTMLResponse(pages.login_page(next_path=_local(next)), headers=_NO_STORE)


@router.post("/login")
async def login(request: Request, clock: AppClock) -> Response:
    """Exchange the admin token for a session cookie; a wrong one is the form again, 401."""
    if request.headers.get("content-type", "").split(";")[0].strip() != FORM:
        raise UnsupportedMediaType(f"send the login form as {FORM}")
    fields = _form(await read_body(request, MAX_FORM_BYTES))
    next_path = _local(fields.get("next", HOME))
    admin_token: str = request.app.state.admin_token
    if not is_admin_token(request, fields.get("token", "")):
        page = pages.login_page(message="That is not the admin token.", next_path=next_path)
        return HTMLResponse(page, status_code=401, headers=_NO_STORE)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        cookie.NAME,
        cookie.issue(admin_token, now=clock.now()),
        max_age=int(cookie.LIFETIME),
        path=HOME,
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
def logout() -> Response:
    """Forget the session cookie; back to the login form."""
    response = RedirectResponse(LOGIN, status_code=303)
    response.delete_cookie(cookie.NAME, path=HOME, secure=True, httponly=True, samesite="strict")
    return response


def install(app: FastAPI) -> None:
    """Mount the pages and the JSON routes, and send browsers without a session to the login."""
    app.include_router(router)
    app.include_router(api)
    app.add_exception_handler(LoginRequired, _login_required)  # type: ignore[arg-type]


async def _login_required(request: Request, error: LoginRequired) -> Response:
    if "text/html" in request.headers.get("accept", ""):
        target = f"{LOGIN}?next={quote(request.url.path, safe='/')}"
        return RedirectResponse(target, status_code=303)
    return JSONResponse(
        status_code=error.status_code,
        content={"error": error.reason, "message": error.message},
        headers={"WWW-Authenticate": 'Bearer realm="fedge admin"'},
    )


def _form(body: bytes) -> dict[str, str]:
    try:
        parsed = parse_qs(
            body.decode(), keep_blank_values=True, max_num_fields=8, strict_parsing=bool(body)
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the login form is not a valid {FORM} body: {exc}") from None
    return {name: values[0] for name, values in parsed.items()}


def _local(path: str) -> str:
    """``path`` if it is a dashboard page, else the front page: never an open redirect."""
    unsafe = "//" in path or "\\" in path or ".." in path or path.startswith(LOGIN)
    if path == HOME or (path.startswith(HOME + "/") and not unsafe):
        return path
    return HOME


_NO_STORE = {"Cache-Control": "no-store"}
