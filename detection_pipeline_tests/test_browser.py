"""The Dagster UI as a person uses it, in headless Chromium: a detection run launched from the
launchpad gets its record, queue and priority as from the CLI, and its page shows the results.
Screenshots are kept in test-artifacts/browser/."""

import re

import pytest

from detection_pipeline.sensors.upkeep import UPKEEP_SENSOR

from .conftest import ARTIFACTS, system_tool, wait_until

LOCATION = "detection_pipeline.definitions"
# Chromium as root in a container, with no network beyond this machine.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page():
    chromium = system_tool("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def _dismiss_welcome(page) -> None:
    """Dagster asks a new browser to join its community, once, a moment after the first page
    loads; a person clicks Skip."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.get_by_role("button", name="Skip").click(timeout=15_000)
    except PlaywrightTimeout:
        pass


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_a_detection_run_launched_from_the_launchpad(served, page):
    queue, url = served
    shots = ARTIFACTS / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    images = queue.settings.data_dir / "urgent"

    page.goto(f"{url}/locations/{LOCATION}/jobs/detect/playground")
    page.locator(".CodeMirror").first.wait_for()
    _dismiss_welcome(page)
    # The config starts with every field at its default; the job's queue tags are shown.
    for tag in ("priority: 10", "detection_pipeline/queue: detection"):
        page.get_by_text(tag).first.wait_for()
    page.screenshot(path=shots / "launchpad-defaults.png")
    page.locator(".CodeMirror").first.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(
        f"ops:\n  prepare_inputs:\n    config:\n      images: ['{images}']\n      model: dumps\n"
    )
    page.screenshot(path=shots / "launchpad.png")
    page.get_by_role("button", name="Launch Run").click()

    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}.*"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    page.get_by_text("Success", exact=True).first.wait_for(timeout=240_000)
    page.screenshot(path=shots / "run.png")

    # The run has its record, in the queue and with the priority the CLI would give it.
    [record] = [r for r in queue.store.list_runs() if r.dagster_run_id == run_id]
    assert (record.status, record.queue, record.priority) == ("success", "detection", 10)
    assert record.model == "dumps" and record.params["images"] == [str(images)]

    # What was found, on the run's page: the collect_outputs step's metadata.
    page.goto(f"{url}/runs/{run_id}?logs=step%3Acollect_outputs")
    for label in ("per class", "images/s", "detections.json", "drawn images", "detections"):
        page.get_by_text(label, exact=True).first.wait_for()
    page.get_by_text(str(record.output_dir)).first.wait_for()
    page.get_by_text("View full message").first.click()
    page.get_by_role("dialog").get_by_text("per class").wait_for()
    page.wait_for_timeout(1000)  # the dialog fades in
    page.screenshot(path=shots / "run-outputs.png")


@pytest.mark.parametrize("open_queue", ["sqlite"], indirect=True)
def test_the_queue_sensors_and_daemon_are_visible(served, page):
    queue, url = served
    shots = ARTIFACTS / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    data = queue.settings.data_dir
    blocker = queue.submit("detection", {"images": [str(data / "photos")], "model": "dumps"})
    wait_until(lambda: queue.store.get_run(blocker.id).status == "processing", timeout=120)
    low = queue.submit("training", {"dataset": str(data / "annotated"), "name": "m"})
    high = queue.submit("detection", {"images": [str(data / "urgent")], "model": "dumps"})

    page.goto(f"{url}/runs?q%5B0%5D=status%3AQUEUED")
    _dismiss_welcome(page)
    # Dagster lists queued runs newest first, each with its record and queue; its priority,
    # by which the queue launches it, is among its tags.
    for record in (low, high):
        page.get_by_text(record.dagster_run_id[:8]).first.wait_for()
        page.get_by_text(f"detection_pipeline/record_id: {record.id}").wait_for()
    page.screenshot(path=shots / "queued.png")
    page.get_by_text("View all tags").first.click()
    page.get_by_role("dialog").get_by_text("priority").first.wait_for()
    page.wait_for_timeout(1000)  # the dialog fades in
    page.screenshot(path=shots / "queued-tags.png")
    page.keyboard.press("Escape")

    page.goto(f"{url}/automation")
    page.get_by_text(UPKEEP_SENSOR, exact=True).first.wait_for()
    page.screenshot(path=shots / "automation.png")
    page.goto(f"{url}/deployment/daemons")
    for daemon in ("Scheduler", "Sensors", "Run queue"):
        page.get_by_text(daemon, exact=True).first.wait_for()
    page.get_by_text("Running", exact=True).first.wait_for()
    page.screenshot(path=shots / "daemons.png")

    for record in (low, high):
        queue.cancel(record.id)
    queue.terminate(blocker.id)
