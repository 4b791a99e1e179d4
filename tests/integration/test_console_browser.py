"""The operator console in a real browser (#22): headless Debian Chromium, driven by Selenium, against the
local stack. Screenshots of each page go to ``.local/test-artifacts/console`` (``SYNC_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.stack

ARTIFACTS = Path(os.environ.get("SYNC_TEST_ARTIFACTS", ".local/test-artifacts")) / "console"
WAIT = 30.0


def _binaries() -> tuple[str | None, str | None]:
    return shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver = _binaries()
    if not (chromium and driver):
        message = "chromium/chromedriver missing: run local/browser/install.sh (make test does) as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1000",
                "--no-proxy-server", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    b = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield b
    finally:
        b.quit()


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} ({last})")


def shot(b: Any, name: str) -> None:
    b.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def status_text(b: Any) -> str:
    from selenium.webdriver.common.by import By

    return b.find_element(By.ID, "status").text


def test_console_end_to_end(stack: Any, api: Any, world: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    sims = world["sims"]
    b = browser

    def by_id(i: str) -> Any:
        return b.find_element(By.ID, i)

    def click(find: Callable[[], Any], what: str) -> None:
        """Clicks what ``find`` returns, finding it again while the page re-renders it (stale elements)."""

        def attempt() -> bool:
            found = find()
            if not found:
                return False
            found.click()
            return True

        wait_for(attempt, what)

    def click_button(text: str, scope: Any = None) -> None:
        root = scope or b
        shown = lambda: next((x for x in root.find_elements(By.TAG_NAME, "button")  # noqa: E731
                              if x.text == text and x.is_displayed()), None)  # fmt: skip
        click(shown, f"button {text}")

    def click_css(css: str) -> None:
        click(lambda: b.find_element(By.CSS_SELECTOR, css), css)

    # Data: a coupled customer changed in BC (plan -> update), one whose one-way sync was refused (an error).
    name = f"Console {uuid.uuid4().hex[:8]}"
    bc1 = sims.bc_create("customers", displayName=name, phoneNumber="+45 1")
    dv1 = sims.dv_create("accounts", name=name, telephone1="+45 1")
    assert api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": bc1, "dataverseId": dv1}).status_code == 201
    sims.bc_patch("customers", bc1, phoneNumber="+45 2")
    bc2 = sims.bc_create("customers", displayName=name + " B", phoneNumber="+45 3")
    dv2 = sims.dv_create("accounts", name=name + " B", telephone1="+45 3")
    assert api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": bc2, "dataverseId": dv2}).status_code == 201
    sims.bc_patch("customers", bc2, phoneNumber="+45 4")
    sims.dv_patch("accounts", dv2, telephone1="+45 5")
    refused = api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [bc2], "direction": "toDataverse"}).json()
    assert refused["results"][0]["error"]["code"] == "target_changed"

    try:
        # Load with a key (kept in sessionStorage only).
        b.get(stack.host_url.rstrip("/") + "/api/console")
        by_id("key").send_keys(stack.function_key)
        by_id("connect").click()
        wait_for(lambda: by_id("mapping-rows").find_elements(By.TAG_NAME, "tr"), "table mappings")
        assert b.execute_script("return sessionStorage.getItem('syncFunctionKey')") == stack.function_key
        assert b.execute_script("return localStorage.length") == 0
        shot(b, "1-table-mappings")

        # Change a mapping's direction.
        wait_for(lambda: Select(by_id("dir-ITEM-PRODUCT")).select_by_value("bidirectional") or True, "direction")
        wait_for(
            lambda: api.get("/api/mappings/ITEM-PRODUCT").json()["direction"] == "bidirectional", "direction saved"
        )

        # Add a field mapping.
        click_button("Integration Field Mappings")
        Select(by_id("field-mapping")).select_by_value("CUSTOMER")
        by_id("new-bc").send_keys("taxRegistrationNumber")
        by_id("new-dv").send_keys("description")
        Select(by_id("new-dir")).select_by_value("toDataverse")
        by_id("add-field").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(lambda: "taxRegistrationNumber" in by_id("field-rows").text, "new field mapping row")
        fields = api.get("/api/mappings/CUSTOMER/fields").json()["value"]
        assert any(f["bc"] == "taxRegistrationNumber" and f["userDefined"] for f in fields)
        shot(b, "2-field-mappings")

        # Find the coupling, run a plan (the direction prompt first), then synchronize after the prompt.
        click_button("Couplings")
        Select(by_id("c-mapping")).select_by_value("CUSTOMER")
        by_id("c-id").send_keys(bc1)
        by_id("find-coupling").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(lambda: bc1 in by_id("coupling-detail").text, "coupling detail")
        click_button("Plan", by_id("coupling-detail"))
        wait_for(lambda: by_id("direction-dialog").get_attribute("open") is not None, "direction prompt")
        assert by_id("direction-dialog").find_element(By.CSS_SELECTOR, "input[value=toDataverse]").is_selected()
        by_id("dd-ok").click()
        wait_for(lambda: "update" in by_id("plan-view").text, "plan table")
        assert "+45 2" in by_id("plan-view").text and sims.dv_get("accounts", dv1)["telephone1"] == "+45 1"
        shot(b, "3-plan")
        click_button("Synchronize now", by_id("coupling-detail"))
        wait_for(lambda: by_id("direction-dialog").get_attribute("open") is not None, "direction prompt")
        by_id("dd-ok").click()
        wait_for(lambda: "updated" in status_text(b), "sync result")
        assert sims.dv_get("accounts", dv1)["telephone1"] == "+45 2"  # the plan said so
        wait_for(lambda: "syncNow" in by_id("history-rows").text, "history rows")
        shot(b, "4-couplings-history")

        # Retry an error, then delete a coupling from the errors page.
        click_button("Coupled Data Synchronization Errors")
        Select(by_id("e-mapping")).select_by_value("CUSTOMER")
        wait_for(lambda: bc2 in by_id("error-rows").text, "error row")
        shot(b, "5-errors")
        click_css(f"#error-rows button[aria-label='Retry error of {bc2}']")
        wait_for(lambda: "succeeded" in status_text(b) or "partial" in status_text(b), "retry job finished")
        assert sims.dv_get("accounts", dv2)["telephone1"] == "+45 4"  # retry forces the refused write
        bad = sims.bc_create("customers", displayName=name + " C", phoneNumber="+45 6")
        dv3 = sims.dv_create("accounts", name=name + " C", telephone1="+45 6")
        assert api.post("/api/mappings/CUSTOMER/couplings", json={"bcId": bad, "dataverseId": dv3}).status_code == 201
        sims.bc_patch("customers", bad, phoneNumber="+45 7")
        sims.dv_patch("accounts", dv3, telephone1="+45 8")
        api.post("/api/mappings/CUSTOMER/sync", json={"bcIds": [bad], "direction": "toDataverse"})
        Select(by_id("e-mapping")).select_by_value("")
        Select(by_id("e-mapping")).select_by_value("CUSTOMER")
        wait_for(lambda: bad in by_id("error-rows").text, "second error row")
        click_css(f"#error-rows button[aria-label='Delete coupling of {bad}']")
        b.switch_to.alert.accept()
        wait_for(lambda: api.get(f"/api/mappings/CUSTOMER/couplings/{bad}").status_code == 404, "coupling deleted")

        # Watch a job finish (live progress on the jobs page).
        click_button("Integration Table Mappings")
        wait_for(lambda: by_id("mapping-rows").find_elements(By.TAG_NAME, "tr"), "table mappings")
        click_css("button[aria-label='Run incremental sync of CUSTOMER']")
        wait_for(lambda: not by_id("jobs").get_attribute("hidden"), "jobs page")
        wait_for(lambda: "succeeded" in status_text(b) or "partial" in status_text(b), "job finished", timeout=60)
        finished = "#job-rows tr[data-status=succeeded], #job-rows tr[data-status=partial]"
        wait_for(lambda: b.find_elements(By.CSS_SELECTOR, finished), "finished job row")
        shot(b, "6-jobs")
    finally:
        shot(b, "last")
        api.post("/api/mappings/CUSTOMER/reset")
        api.post("/api/mappings/ITEM-PRODUCT/reset")
