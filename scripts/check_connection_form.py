"""Look at the ``openbanking`` connection form the way a user does: Airflow's UI in headless Chromium.

Starts ``airflow api-server`` on a free loopback port in a throw-away ``AIRFLOW_HOME`` (simple auth
manager, everyone admin; ``[core] test_connection = Enabled``), creates ``openbanking_default`` with
``airflow connections add``, then drives Debian's ``/usr/bin/chromium`` through Playwright
(``pip install playwright``; no browser download) to the *Add* and the *Edit* form, and writes

- ``<out>/form-add-standard.png``, ``form-add-extra.png``, ``form-edit-extra.png`` and
- ``<out>/form.json``: per form, the extra fields drawn (id, input type, placeholder, description
  text) and what the Extra JSON box holds.

Usage: ``.venv/bin/python scripts/check_connection_form.py [--out form-check]``. The API server is
stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CONN_ID = "openbanking_default"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    env = os.environ.copy()
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env


def _airflow(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "airflow", *args], env=env, check=True, capture_output=True)


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"api-server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("api-server did not become healthy")


def _extra_fields(dialog: Any) -> list[dict[str, Any]]:
    fields = []
    for el in dialog.locator("[id^='element_']").all():
        if not el.is_visible():
            continue
        fields.append(
            {
                "name": str(el.get_attribute("id"))[len("element_") :],
                "tag": el.evaluate("e => e.tagName.toLowerCase()"),
                "type": el.get_attribute("type") or el.get_attribute("role"),
                "placeholder": el.get_attribute("placeholder"),
                "checked": el.is_checked() if el.get_attribute("type") == "checkbox" else None,
            }
        )
    return fields


def _new_connection_extra(base: str) -> dict[str, Any]:
    """The Extra JSON the Add form starts with: the UI copies every extra field's value into it
    (read from the same endpoint the UI reads, ``/ui/connections/hook_meta``)."""
    with urllib.request.urlopen(f"{base}/ui/connections/hook_meta", timeout=30) as resp:
        meta = json.load(resp)
    hook = next(h for h in meta if h["connection_type"] == "openbanking")
    return {name: field.get("value") for name, field in (hook.get("extra_fields") or {}).items()}


def _open_section(dialog: Any, name: str) -> None:
    dialog.get_by_role("button", name=name, exact=True).click()
    time.sleep(1.0)  # the accordion's animation


def check(base: str, out: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    report: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2400})
            page.set_default_timeout(60_000)

            page.goto(f"{base}/connections", wait_until="domcontentloaded")
            page.get_by_role("button", name="Add Connection").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("combobox").first.click()
            page.get_by_role("option", name="Open Banking (Flinks / FDX)").click()
            dialog.get_by_text("API base URL").first.wait_for()
            time.sleep(1)
            report["add_standard_placeholders"] = {
                name: dialog.locator(f"input[name='{name}']").get_attribute("placeholder")
                for name in ("host", "login")
            }
            dialog.screenshot(path=str(out / "form-add-standard.png"))
            _open_section(dialog, "Extra Fields")
            report["add_extra_fields"] = _extra_fields(dialog)
            report["add_descriptions"] = dialog.locator("[id^='element_']").first.evaluate(
                "e => Array.from(e.closest('[role=dialog]').querySelectorAll('code')).map(c => c.textContent)"
            )
            report["add_text"] = dialog.inner_text()
            dialog.screenshot(path=str(out / "form-add-extra.png"))
            _open_section(dialog, "Extra Fields JSON")
            report["add_extra_json"] = _new_connection_extra(base)
            dialog.screenshot(path=str(out / "form-add-extra-json.png"))
            page.keyboard.press("Escape")

            page.goto(f"{base}/connections", wait_until="domcontentloaded")
            row = page.get_by_role("row").filter(has_text=CONN_ID)
            row.get_by_role("button", name="Edit Connection").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Open Banking (Flinks / FDX)").first.wait_for()
            _open_section(dialog, "Extra Fields")
            report["edit_extra_fields"] = _extra_fields(dialog)
            dialog.screenshot(path=str(out / "form-edit-extra.png"))
        finally:
            browser.close()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="form-check", help="directory for screenshots and form.json")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="ob-form-home-"))
    (home / "dags").mkdir()
    env = _env(home)
    _airflow(env, "db", "migrate")
    _airflow(
        env,
        "connections",
        "add",
        CONN_ID,
        "--conn-type",
        "openbanking",
        "--conn-host",
        "https://ob.flinksapp.com",
        "--conn-login",
        "my-client",
        "--conn-password",
        "my-secret",
        "--conn-extra",
        json.dumps({"provider_id": "1000", "use_pkce": True}),
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (out / "api-server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow", "api-server", "--port", str(port), "--host", "127.0.0.1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(base, proc)
        report = check(base, out)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    (out / "form.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "add_text"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
