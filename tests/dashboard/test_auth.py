"""Who may see the dashboard: the admin token as a bearer header, or the login form's cookie."""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest

from coordinator.dashboard import cookie
from tests.dashboard.conftest import ADMIN_TOKEN, LiveJob

HTML = {"Accept": "text/html,application/xhtml+xml"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def log_in(
    live: LiveJob, token: str, next_path: str = "/dashboard"
) -> tuple[int, dict[str, str], str]:
    response = live.http.post(
        "/dashboard/login", content=f"token={token}&next={next_path}", headers={**FORM, **HTML}
    )
    return response.status_code, dict(response.headers), response.text


def session_cookie(headers: dict[str, str]) -> str:
    jar: SimpleCookie = SimpleCookie(headers["set-cookie"])
    return jar[cookie.NAME].value


def test_a_browser_without_a_session_is_sent_to_the_login_page(live_job):
    response = live_job.http.get(f"/dashboard/jobs/{live_job.job_id}", headers=HTML)

    assert response.status_code == 303
    assert (
        response.headers["location"] == f"/dashboard/login?next=/dashboard/jobs/{live_job.job_id}"
    )


def test_an_api_client_without_credentials_gets_401_with_a_reason(live_job):
    response = live_job.http.get("/dashboard", headers={"Accept": "application/json"})

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert "/dashboard/login" in response.json()["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_admin_token_as_a_bearer_header_opens_the_dashboard(live_job):
    response = live_job.http.get("/dashboard", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1>Fleet</h1>" in response.text


def test_a_device_token_is_forbidden_on_the_dashboard(live_job):
    response = live_job.http.get(
        "/dashboard", headers={"Authorization": f"Bearer {live_job.device_token}", **HTML}
    )

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_a_wrong_token_is_the_login_page_again_with_a_message_and_401(live_job):
    status, headers, page = log_in(live_job, "not-the-token")

    assert status == 401
    assert "That is not the admin token." in page
    assert 'name="token"' in page
    assert "set-cookie" not in headers


def test_the_right_token_sets_a_secure_httponly_strict_cookie_that_is_not_the_token(live_job):
    status, headers, _ = log_in(
        live_job, ADMIN_TOKEN, next_path=f"/dashboard/jobs/{live_job.job_id}"
    )

    assert status == 303
    assert headers["location"] == f"/dashboard/jobs/{live_job.job_id}"
    attributes = headers["set-cookie"].lower()
    for attribute in ("secure", "httponly", "samesite=strict", "path=/dashboard"):
        assert attribute in attributes
    value = session_cookie(headers)
    assert ADMIN_TOKEN not in value
    opened = live_job.http.get("/dashboard", headers={"Cookie": f"{cookie.NAME}={value}", **HTML})
    assert opened.status_code == 200
    assert "<h1>Fleet</h1>" in opened.text


def test_a_tampered_cookie_is_refused(live_job):
    _, headers, _ = log_in(live_job, ADMIN_TOKEN)
    value = session_cookie(headers)
    forged = value[:-1] + ("0" if value[-1] != "0" else "1")

    response = live_job.http.get("/dashboard", headers={"Cookie": f"{cookie.NAME}={forged}"})

    assert response.status_code == 401


@pytest.mark.parametrize(
    "target",
    ["https://elsewhere.example/", "//elsewhere.example", "/v1/admin/jobs", "/dashboard/../v1"],
)
def test_login_sends_the_browser_only_to_dashboard_pages(live_job, target):
    status, headers, _ = log_in(live_job, ADMIN_TOKEN, next_path=target)

    assert status == 303
    assert headers["location"] == "/dashboard"


def test_logout_deletes_the_cookie_and_returns_to_the_login_page(live_job):
    response = live_job.http.post("/dashboard/logout", headers=HTML)

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"
    jar: SimpleCookie = SimpleCookie(response.headers["set-cookie"])
    assert jar[cookie.NAME].value == ""
    assert jar[cookie.NAME]["max-age"] == "0"


def test_a_login_that_is_not_a_form_is_refused_with_415(live_job):
    response = live_job.http.post("/dashboard/login", json={"token": ADMIN_TOKEN})

    assert response.status_code == 415
    assert "x-www-form-urlencoded" in response.json()["message"]


def test_a_login_form_that_does_not_parse_is_refused_with_400(live_job):
    response = live_job.http.post("/dashboard/login", content=b"token&&=\xff", headers=FORM)

    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_the_json_overview_needs_the_admin_token(live_job):
    response = live_job.http.get("/v1/admin/overview")

    assert response.status_code == 401


def test_a_cookie_expires_after_its_lifetime():
    value = cookie.issue(ADMIN_TOKEN, now=1000.0)

    assert cookie.is_valid(ADMIN_TOKEN, value, now=1000.0 + cookie.LIFETIME - 1)
    assert not cookie.is_valid(ADMIN_TOKEN, value, now=1000.0 + cookie.LIFETIME)


def test_a_cookie_issued_under_another_admin_token_is_refused():
    value = cookie.issue("an old admin token", now=1000.0)

    assert not cookie.is_valid(ADMIN_TOKEN, value, now=1001.0)
    assert not cookie.is_valid(ADMIN_TOKEN, "v1.99999999999.nonce", now=1001.0)
