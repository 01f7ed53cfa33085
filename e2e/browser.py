"""Headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright): log into the Airflow UI,
screenshot the ``openbanking`` connection form, the DAG run and the deferred sensor's log."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from harness import Checks

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: What the ``openbanking`` connection form must show (labels from get_provider_info's form).
STANDARD_LABELS = ("API base URL", "Client ID", "Client secret")
EXTRA_LABELS = ("Refresh token", "Provider ID", "Scopes", "Redirect URI")


def screenshots(
    dag_id: str,
    base: str,
    password: str,
    run_id: str | None,
    deferred: dict[str, Any],
    out: Path,
    timeout_ms: int = 90_000,
) -> dict[str, Any]:
    """Log into the UI with headless Chromium; screenshot the connection form and the DAG run.

    Returns ``{"shots": [file names], "form": {what the form showed}}``.
    """
    from playwright.sync_api import sync_playwright

    shots: list[str] = []
    form: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1500})
            page.set_default_timeout(timeout_ms)
            page.goto(f"{base}/", wait_until="domcontentloaded")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url)

            # The form of connection `openbanking_default`: its accordion opens one section at a
            # time, so the standard and the extra fields are shot one after the other, then side by side.
            page.goto(f"{base}/connections", wait_until="domcontentloaded")
            row = page.get_by_role("row").filter(has_text="openbanking_default")
            row.get_by_role("button", name="Edit Connection").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Open Banking (Flinks / FDX)").first.wait_for()
            form["standard"] = _visible_labels(dialog, STANDARD_LABELS)
            form["client_secret_type"] = dialog.locator("input[name='password']").get_attribute("type")
            standard = out / "connection-form-standard.png"
            dialog.screenshot(path=str(standard))
            dialog.get_by_role("button", name="Extra Fields", exact=True).click()
            dialog.locator("#element_refresh_token").wait_for()
            time.sleep(1)  # the accordion's animation
            form["extra"] = _visible_labels(dialog, EXTRA_LABELS)
            form["refresh_token_type"] = dialog.locator("#element_refresh_token").get_attribute("type")
            form["extra_inputs"] = sorted(
                str(el.get_attribute("id"))[len("element_") :]
                for el in dialog.locator("[id^='element_']").all()
                if el.is_visible()
            )
            extra = out / "connection-form-extra.png"
            dialog.screenshot(path=str(extra))
            combined = out / "connection-form.png"
            _side_by_side(browser, [standard, extra], combined)
            shots += [combined.name, standard.name, extra.name]
            page.keyboard.press("Escape")

            if run_id:
                page.goto(f"{base}/dags/{dag_id}/runs/{run_id}", wait_until="domcontentloaded")
                page.get_by_text("Task Instances", exact=False).first.wait_for()
                page.get_by_role("button", name="Show Grid (Press g)").click()
                page.get_by_text("Success", exact=True).first.wait_for()
                time.sleep(3)  # let the grid finish rendering
                grid = out / "dag-run.png"
                page.screenshot(path=str(grid))
                page.get_by_role("button", name="Show Graph (Press g)").click()
                time.sleep(4)
                graph = out / "dag-run-graph.png"
                page.screenshot(path=str(graph))
                page.get_by_role("button", name="Show Grid (Press g)").click()
                shots += [grid.name, graph.name]

            if deferred:  # the sensor that waited in the triggerer: its log
                mapped = f"/mapped/{deferred['map_index']}" if deferred.get("map_index", -1) >= 0 else ""
                page.goto(
                    f"{base}/dags/{deferred.get('dag_id', dag_id)}/runs/{deferred['dag_run_id']}"
                    f"/tasks/{deferred['task_id']}{mapped}",
                    wait_until="domcontentloaded",
                )
                page.get_by_text("deferring to the triggerer", exact=False).first.wait_for()
                time.sleep(2)
                sensor = out / "deferred-sensor-log.png"
                page.screenshot(path=str(sensor))
                shots.append(sensor.name)
        finally:
            browser.close()
    return {"shots": shots, "form": form}


def _visible_labels(dialog: Any, labels: tuple[str, ...]) -> dict[str, bool]:
    return {label: dialog.get_by_text(label, exact=True).first.is_visible() for label in labels}


def _side_by_side(browser: Any, images: list[Path], out: Path) -> None:
    """One PNG of ``images`` next to each other (rendered by the browser: no imaging library)."""
    tags = "".join(
        f'<img style="margin:10px;vertical-align:top;border:1px solid #ccc" '
        f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in images
    )
    page = browser.new_page(viewport={"width": 1900, "height": 800})
    try:
        page.set_content(
            f'<html><body style="margin:0;white-space:nowrap;background:#fff">{tags}</body></html>'
        )
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        page.screenshot(path=str(out), full_page=True)
    finally:
        page.close()


def check_form(checks: Checks, form: dict[str, Any]) -> None:
    labels = {**form.get("standard", {}), **form.get("extra", {})}
    missing = [label for label in (*STANDARD_LABELS, *EXTRA_LABELS) if not labels.get(label)]
    secret = form.get("refresh_token_type") == "password" and form.get("client_secret_type") == "password"
    checks.add(
        "UI shows the openbanking connection form",
        not missing and secret,
        f"fields {', '.join(k for k, v in labels.items() if v)}; refresh token input type="
        f"{form.get('refresh_token_type')}, client secret input type={form.get('client_secret_type')}; "
        f"extra inputs rendered: {form.get('extra_inputs')}" + (f"; MISSING {missing}" if missing else ""),
    )
