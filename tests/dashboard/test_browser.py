"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``).

The browser logs in through the form, keeps the session cookie, and must show the live job's
figures exactly as the admin API reports them. Screenshots of each page are saved under the
test's ``tmp_path`` and in ``build/test-artifacts/dashboard/``. Without Chromium the tests skip
on a user's machine and fail under CI (``CI`` set), as the PostgreSQL and Redis tests do.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.conftest import ADMIN_TOKEN, LiveJob

pytestmark = pytest.mark.browser

CHROMIUM = ("chromium", "chromium-browser")


def require_chromium() -> tuple[str, str]:
    """The paths of Chromium and its driver; skip without them, fail on CI."""
    browser = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    missing = [
        name for name, path in (("chromium", browser), ("chromium-driver", driver)) if not path
    ]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the dev extra)")
    if missing:
        message = f"the browser tests need {', '.join(missing)}: make install-browser"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {message}")
        pytest.skip(message)
    assert browser and driver
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium driven by Selenium through the system's chromedriver (no download)."""
    binary, driver_path = require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,1800",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str, tmp_path: Path, artifacts: Path) -> None:
    for folder in (tmp_path, artifacts):
        assert driver.save_screenshot(str(folder / f"{name}.png")), f"no screenshot {name}"


def figure(driver: Any, name: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, f'[data-metric="{name}"]').text)


def submit(driver: Any, button: str) -> None:
    """Click a form's button and wait for the page it leads to (a click does not wait)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, button).click()
    WebDriverWait(driver, 15).until(expected_conditions.staleness_of(old))


def log_in(driver: Any, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "token").send_keys(token)
    submit(driver, "login")


@pytest.fixture
def signed_out(browser: Any, live_job: LiveJob) -> Any:
    """The browser with no session cookie, on the coordinator's origin."""
    browser.get(f"{live_job.url}/dashboard/login")
    browser.delete_all_cookies()
    return browser


def test_a_browser_logs_in_and_sees_the_live_jobs_figures(
    signed_out, live_job, tmp_path, artifacts
):
    from selenium.webdriver.common.by import By

    driver = signed_out
    driver.get(f"{live_job.url}/dashboard")
    assert driver.current_url.startswith(f"{live_job.url}/dashboard/login")
    screenshot(driver, "login", tmp_path, artifacts)

    log_in(driver, ADMIN_TOKEN)

    assert driver.current_url == f"{live_job.url}/dashboard"
    devices = live_job.admin.devices()
    assert figure(driver, "registered") == str(devices["total"])
    screenshot(driver, "fleet", tmp_path, artifacts)

    submit(driver, f"job-{live_job.job_id}")

    job = live_job.admin.job(live_job.job_id)
    versions = live_job.admin.versions(live_job.job_id)
    history = live_job.admin.metrics(live_job.job_id)
    assert driver.current_url == f"{live_job.url}/dashboard/jobs/{live_job.job_id}"
    assert figure(driver, "current-version") == str(job["current_version"])
    assert figure(driver, "versions-count") == str(len(versions))
    assert figure(driver, "accepted-updates") == str(sum(v["num_updates"] for v in versions))
    assert figure(driver, "completed") == str(history["leases"]["completed"])
    assert figure(driver, "rejected-uploads") == str(sum(history["rejected"].values()))
    rows = driver.find_elements(By.CSS_SELECTOR, '[data-metric="version"] tbody tr')
    assert [row.find_element(By.TAG_NAME, "td").text for row in rows] == [
        str(v["number"]) for v in reversed(versions)
    ]
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.chart")) >= 5
    screenshot(driver, "job", tmp_path, artifacts)


def test_the_session_cookie_survives_a_reload_and_logout_ends_it(
    signed_out, live_job, tmp_path, artifacts
):
    from selenium.webdriver.common.by import By

    driver = signed_out
    driver.get(f"{live_job.url}/dashboard/login")
    log_in(driver, ADMIN_TOKEN)
    stored = {c["name"]: c for c in driver.get_cookies()}
    assert stored["fedge_dashboard"]["httpOnly"] and stored["fedge_dashboard"]["secure"]
    assert stored["fedge_dashboard"]["sameSite"] == "Strict"

    driver.refresh()
    assert driver.find_element(By.TAG_NAME, "h1").text == "Fleet"

    submit(driver, "logout")
    assert driver.current_url == f"{live_job.url}/dashboard/login"
    driver.get(f"{live_job.url}/dashboard")
    assert driver.current_url.startswith(f"{live_job.url}/dashboard/login")
    screenshot(driver, "logged-out", tmp_path, artifacts)


def test_a_wrong_token_shows_the_login_page_with_its_message(
    signed_out, live_job, tmp_path, artifacts
):
    from selenium.webdriver.common.by import By

    driver = signed_out
    driver.get(f"{live_job.url}/dashboard/login")

    log_in(driver, "not-the-admin-token")

    assert driver.find_element(By.ID, "login-error").text == "That is not the admin token."
    assert driver.get_cookies() == []
    screenshot(driver, "wrong-token", tmp_path, artifacts)
