"""The console in a real browser (headless Chromium), against the four services as
separate processes on RabbitMQ and PostgreSQL with the local executor: log in, create a
webhook, send a test delivery, find the delivery and its job, watch the job's output
arrive, redeliver; then users without the rights see neither the buttons nor the data.

With `KRITEN_SCREENSHOTS_DIR` set, it also saves the screenshots of docs/console.md
there (`KRITEN_SCREENSHOTS_DIR=docs/console make test PYTEST_ARGS=tests/ui`).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from kriten_common.amqp import Topology
from tests.system.harness import KritenClient, make_task_repo, running, services_of
from tests.ui.browser import Browser, chromium

pytestmark = [pytest.mark.integration, pytest.mark.system]

PASSWORD = "pw-123456"


@dataclass
class Deployment:
    api_url: str
    ingress_url: str
    client: KritenClient
    go: Path  # the task waits for this file before it finishes: the test says when


def waiting_task_command(go: Path) -> str:
    """Prints a line (with markup in it, to be shown as text), waits for `go`, then
    prints a few more lines and hello-kriten's json_data: a job the test can watch run."""
    return (
        'echo "step 1 <b>not markup</b>"; '
        f"while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.1; done; "
        'for i in 2 3 4; do echo "step $i"; sleep 0.3; done; '
        "python examples/hello-kriten/hello-kriten.py"
    )


@pytest.fixture
async def deployment(
    postgres_url: str, amqp_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[Deployment]:
    env = {
        "KRITEN_DATABASE_URL": postgres_url,
        "KRITEN_AMQP_URL": amqp_url,
        "KRITEN_AMQP_PREFIX": topology.prefix,
        "KRITEN_JOBS_DIR": str(tmp_path / "jobs"),
        "KRITEN_LOG_FORMAT": "json",
    }
    services = services_of(env, tmp_path, "api", "ingress", "dispatcher", "collector")
    # The api sends test deliveries to the ingress (the env dict is every service's).
    env["KRITEN_INGRESS_URL"] = services[1].url
    async with running(services) as (api, ingress, *_):
        client = KritenClient(api.url)
        go = tmp_path / "go"
        await _seed(client, make_task_repo(tmp_path), go)
        yield Deployment(api.url, ingress.url, client, go)
        await client.close()


async def _seed(client: KritenClient, repo_url: str, go: Path) -> None:
    """What the console does not create (yet): a runner, a task, and two more users:
    rita, who may read every job and webhook but change nothing, and bob, with no role."""
    await client.login()
    await client.create(
        "/api/v1/runners", {"name": "python", "image": "python:3.11-slim", "gitURL": repo_url}
    )
    await client.create(
        "/api/v1/tasks",
        {
            "name": "hello-kriten",
            "runner": "python",
            "command": waiting_task_command(go),
            "description": "Says hello and shows its input",
        },
    )
    for name in ("rita", "bob"):
        await client.create("/api/v1/users", {"username": name, "password": PASSWORD})
    for resource in ("jobs", "webhooks"):
        role = {"name": f"read-{resource}", "resource": resource, "resource_ids": ["*"]}
        await client.create("/api/v1/roles", {**role, "access": "read"})
        binding = {"role_name": f"read-{resource}", "subject_kind": "users", "subject_name": "rita"}
        await client.create("/api/v1/role_bindings", {"name": f"rita-{resource}", **binding})


@pytest.fixture
def browser(deployment: Deployment) -> Iterator[Browser]:
    shots = os.environ.get("KRITEN_SCREENSHOTS_DIR")
    with chromium() as driver:
        yield Browser(driver, deployment.api_url, Path(shots) if shots else None)


@dataclass(frozen=True)
class Row:
    id: str
    text: str


def _deliveries(browser: Browser) -> dict[str, Row]:
    """The delivery log's rows by outcome, read at once (the log is refreshed, and its
    elements replaced, every few seconds)."""
    return {
        row.find_element(By.CSS_SELECTOR, ".badge").text: Row(
            row.get_attribute("data-delivery") or "", row.text
        )
        for row in browser.all("tr[data-delivery]")
    }


def log_in(browser: Browser, username: str, password: str) -> None:
    browser.driver.delete_all_cookies()
    browser.open("/ui/jobs")
    browser.wait(lambda: browser.path.startswith("/ui/login"), "the login page")
    browser.fill({"username": username, "password": password})
    browser.click('button[type="submit"]')
    browser.wait(lambda: browser.path == "/ui/jobs", "the jobs page after logging in")
    assert browser.text('[data-testid="username"]') == username


async def test_webhook_to_job_in_the_console(deployment: Deployment, browser: Browser) -> None:
    log_in(browser, "root", "root")

    # Create a webhook: its secret is shown once, then masked.
    browser.click('a[href="/ui/webhooks"]')
    browser.click('a[href="/ui/webhooks/new"]')
    browser.fill({"description": "NetBox devices", "task": "hello-kriten"})
    Select(browser.find('select[name="scheme"]')).select_by_visible_text("netbox")
    browser.click('button[type="submit"]')
    secret = browser.wait_for('[data-testid="secret"]').text
    assert len(secret) >= 32
    browser.click('[data-testid="open-webhook"]')
    hook_path = browser.wait(
        lambda: browser.path if "/ui/webhooks/" in browser.path else "", "the webhook page"
    )
    hook_id = hook_path.rsplit("/", 1)[-1]
    assert secret not in browser.driver.page_source
    assert (
        browser.find("#hook-url").get_attribute("value")
        == f"{deployment.api_url}/api/v1/webhooks/run/{hook_id}"
    )

    # A delivery with a bad signature is logged with its reason.
    async with aiohttp.ClientSession() as session:
        run_url = f"{deployment.ingress_url}/api/v1/webhooks/run/{hook_id}"
        bad = {"X-Hook-Signature": "0" * 128, "Content-Type": "application/json"}
        async with session.post(run_url, data=b'{"event": "x"}', headers=bad) as answer:
            assert answer.status == 401

    # Send a test delivery: it is accepted, and its job listed with it.
    browser.click('button[data-action="send-test"]')
    job_id = browser.wait_for('[data-result] [data-testid="new-job"]').text
    assert job_id.startswith("hello-kriten-")
    rows = browser.wait(
        lambda: _deliveries(browser) if len(_deliveries(browser)) == 2 else None,
        "both deliveries listed",
    )
    assert set(rows) == {"accepted", "rejected"}
    assert "bad signature" in rows["rejected"].text
    assert job_id in rows["accepted"].text
    browser.screenshot("webhook")

    # The delivery: its headers and body; from it, its job.
    browser.click(f'a[href$="/deliveries/{rows["accepted"].id}"]')
    browser.wait_for('[data-testid="body"]')
    assert "kriten_test" in browser.text('[data-testid="body"]')
    assert "x-hook-signature" in browser.driver.page_source
    delivery_path = browser.path
    browser.click(f'a[href="/ui/jobs/{job_id}"]')

    # The job runs, waiting for the test's go: its output so far is on the page, as text.
    browser.wait(
        lambda: browser.find("#job-summary").get_attribute("data-status") == "running",
        "the job running",
    )
    browser.wait(lambda: "step 1" in browser.text("#output"), "the first line of output")
    assert "step 1 <b>not markup</b>" in browser.text("#output")
    assert browser.all("#output b") == []
    browser.screenshot("job-running")
    # Then the rest arrives while the page is open: followed from the API's log stream.
    deployment.go.touch()
    browser.wait(lambda: "Hello from Kriten!" in browser.text("#output"), "the rest of the output")
    browser.wait(
        lambda: browser.find("#job-summary").get_attribute("data-status") == "succeeded", "success"
    )
    assert browser.text('[data-testid="exit-code"]') == "0"
    assert '"kriten_test": true' in browser.text('[data-testid="json-data"]')
    assert "kriten_test" in browser.text('[data-testid="input"]')
    browser.screenshot("job")

    # Redeliver: the same body again, as a new job.
    browser.open(delivery_path)
    browser.click('button[data-action="redeliver"]')
    again = browser.wait_for('[data-result] [data-testid="new-job"]')
    second_job = again.text
    assert second_job != job_id
    browser.press(again)
    browser.wait(
        lambda: browser.find("#job-summary").get_attribute("data-status") == "succeeded",
        "the redelivered job's success",
    )
    assert "Hello from Kriten!" in browser.text("#output")

    # Both jobs in the list, with the source filter.
    browser.open("/ui/jobs?source=webhook")
    browser.wait(lambda: len(browser.all("tr[data-job]")) == 2, "both jobs listed")
    assert browser.console_errors() == []  # no script error, no CSP violation
    await _screenshots_of_the_other_pages(deployment, browser)

    # Rita may read it all and change nothing: the data, and no buttons.
    log_in(browser, "rita", PASSWORD)
    browser.open(f"/ui/jobs/{job_id}")
    assert "Hello from Kriten!" in browser.wait_for("#output").text
    assert browser.all("button[data-action]") == [browser.find('[data-action="logout"]')]
    browser.open(f"/ui/webhooks/{hook_id}")
    browser.wait_for("tr[data-delivery]")
    assert browser.all('button[data-action="send-test"], button[data-action="rotate"]') == []
    browser.open(delivery_path)
    assert "kriten_test" in browser.wait_for('[data-testid="body"]').text
    assert browser.all('button[data-action="redeliver"]') == []

    # Bob may read none of it: neither the data nor a button.
    log_in(browser, "bob", PASSWORD)
    assert browser.all("tr[data-job]") == []
    for path in (f"/ui/jobs/{job_id}", f"/ui/webhooks/{hook_id}", delivery_path):
        browser.open(path)
        assert browser.text("h1") == "Not found", path
        assert "kriten_test" not in browser.driver.page_source
        assert "Hello from Kriten" not in browser.driver.page_source
        assert browser.all("button[data-action]") == [browser.find('[data-action="logout"]')]
    browser.open("/ui/webhooks")
    assert "NetBox devices" not in browser.driver.page_source

    # Logging out ends the session: the console asks for a login again.
    browser.click('button[data-action="logout"]')
    browser.wait(lambda: browser.path == "/ui/login", "the login page after logging out")
    browser.open("/ui/jobs")
    assert browser.path.startswith("/ui/login")


async def _screenshots_of_the_other_pages(deployment: Deployment, browser: Browser) -> None:
    """The pages of docs/console.md not yet taken, with a little more in them: a task
    with an input schema (its run form), and a few jobs of it, one failed."""
    if browser.screenshots is None:
        return
    client = deployment.client
    schema = {
        "type": "object",
        "properties": {
            "device": {"type": "string", "title": "Device", "description": "As named in NetBox"},
            "mode": {"enum": ["check", "apply"], "default": "check"},
            "retries": {"type": "integer", "minimum": 0, "maximum": 5, "default": 1},
            "dry_run": {"type": "boolean", "default": True},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["device"],
    }
    # hello-kriten shows its input as json_data; one device fails, for the list's sake.
    command = (
        "python examples/hello-kriten/hello-kriten.py; "
        'case "$EXTRA_VARS" in *sw-broken*) echo "sw-broken: unreachable"; exit 2;; esac'
    )
    await client.create(
        "/api/v1/tasks",
        {
            "name": "configure-device",
            "runner": "python",
            "command": command,
            "schema": schema,
            "description": "Pushes a device's configuration",
        },
    )
    for device in ("sw-1", "sw-broken", "sw-2"):
        await client.create("/api/v1/jobs/configure-device", {"device": device})
    browser.open("/ui/tasks/configure-device")
    browser.wait_for('form[data-action="run-task"]')
    browser.fill({"device": "sw-3"})
    browser.screenshot("task-run-form")
    browser.click('form[data-action="run-task"] button[type="submit"]')
    browser.wait(lambda: browser.path.startswith("/ui/jobs/configure-device-"), "the new job")
    browser.wait(
        lambda: browser.find("#job-summary").get_attribute("data-status") == "succeeded", "success"
    )
    browser.open("/ui/jobs")
    browser.wait(
        lambda: len(browser.all(".badge.succeeded, .badge.failed")) == 6, "every job finished"
    )
    browser.screenshot("jobs")
    browser.screenshot("jobs-phone", width=390, height=844)
