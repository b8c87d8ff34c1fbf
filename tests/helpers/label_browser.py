"""efm label in a real browser: Debian's headless Chromium driven by Selenium (the page's tests and
benchmarks/label_map_latency.py)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


CHROMIUM = "/usr/bin/chromium"


CHROMEDRIVER = "/usr/bin/chromedriver"


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,800",
    "--force-device-scale-factor=1",
)


def start_label(*args, timeout: float = 120):
    """`efm label ... --tuning port=0` as a process; returns (process, url, its later output lines) once it prints its URL."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.label", *args, "--tuning", "port=0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(
        target=lambda: [*map(lines.put, proc.stdout), lines.put(None)], daemon=True
    ).start()  # None: the end
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if "open http://" in line:
            return proc, line.split("open ", 1)[1].split()[0], lines
    proc.kill()
    raise AssertionError("efm label did not print its URL:\n" + "".join(seen))


def wait_for(driver, script: str, timeout: float = 30):
    from selenium.common.exceptions import JavascriptException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if driver.execute_script("return typeof efmLabel !== 'undefined' && (" + script + ")"):
                return
        except JavascriptException:  # e.g. a state not there yet; the deadline decides
            pass
        time.sleep(0.05)
    status = driver.execute_script(
        "return document.getElementById('status').textContent + ' | ' + document.getElementById('message').textContent"
    )
    raise AssertionError(f"timed out waiting for {script}: the page says {status!r}")


def click_at(driver, x: float, y: float) -> None:
    """A real mouse click (WebDriver input actions) at a point of the map's container."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    left, top = driver.execute_script(
        "const r = document.getElementById('map').getBoundingClientRect(); return [r.left, r.top];"
    )
    builder = ActionBuilder(driver)
    builder.pointer_action.move_to_location(int(round(left + x)), int(round(top + y))).click()
    builder.perform()


def click_lonlat(driver, lon: float, lat: float) -> None:
    click_at(
        driver,
        *driver.execute_script(
            "return efmLabel.lonlatToContainer(arguments[0], arguments[1]);", lon, lat
        ),
    )


def pick_class(driver, name: str) -> None:
    driver.find_element("css selector", f".class-row[data-label='{name}']").click()


def browser_or_fail():
    """Skip on purpose (EFM_SKIP_BROWSER=1) or fail, naming what to install."""
    import pytest

    if os.environ.get("EFM_SKIP_BROWSER") == "1":
        pytest.skip("EFM_SKIP_BROWSER=1: the labelling page's browser test is skipped on purpose")
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: run `sudo bash scripts/browser_env.sh` (Debian: apt-get install chromium "
            "chromium-driver), or set EFM_SKIP_BROWSER=1 to skip this test on purpose",
            pytrace=False,
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail(
            "selenium is not installed: pip install -c constraints.txt -e '.[test]'", pytrace=False
        )
