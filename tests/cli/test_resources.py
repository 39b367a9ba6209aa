"""list/get/create/update/delete against the real api, in each output format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kritenctl import errors
from tests.cli.conftest import Kritenctl, log_in
from tests.system.harness import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.system]


def _json(kritenctl: Kritenctl, *args: str) -> Any:
    return json.loads(kritenctl.ok(*args, "-o", "json").stdout)


def test_runners_and_tasks(kriten: ServiceProcess, kritenctl: Kritenctl, tmp_path: Path) -> None:
    log_in(kritenctl, kriten.url)
    created = _json(
        kritenctl, "runners", "create", "--name", "python", "--git-url", "file:///srv/tasks"
    )
    assert created["gitURL"] == "file:///srv/tasks"
    assert created["branch"] == "main"

    # The table names the runner and its columns.
    table = kritenctl.ok("runners", "list").stdout
    assert "GITURL" in table
    assert "file:///srv/tasks" in table

    kritenctl.ok("runners", "update", "python", "--branch", "dev", "--set", "image=python:3.12")
    runner = yaml.safe_load(kritenctl.ok("runners", "get", "python", "-o", "yaml").stdout)
    assert (runner["branch"], runner["image"]) == ("dev", "python:3.12")

    task_file = tmp_path / "task.yaml"
    task_file.write_text("name: hello\nrunner: python\ncommand: echo hello\n")
    task = _json(kritenctl, "tasks", "create", "-f", f"@{task_file}", "--timeout-seconds", "30")
    assert (task["name"], task["command"], task["timeout_seconds"]) == ("hello", "echo hello", 30)
    updated = _json(kritenctl, "tasks", "update", "hello", "--synchronous")
    assert updated["synchronous"] is True
    assert [t["name"] for t in _json(kritenctl, "tasks", "list")] == ["hello"]

    # A runner still in use cannot go (409: refused, exit 6), a missing one is exit 4.
    in_use = kritenctl("runners", "delete", "python")
    assert in_use.exit_code == errors.REFUSED
    assert in_use.stderr.startswith("kritenctl: ")
    assert in_use.stderr.endswith("(HTTP 409)\n")
    assert kritenctl("tasks", "get", "nope").exit_code == errors.NOT_FOUND
    duplicate = kritenctl("tasks", "create", "-f", str(task_file))
    assert duplicate.exit_code == errors.REFUSED

    assert "task deleted successfully: hello" in kritenctl.ok("tasks", "delete", "hello").stdout
    deleted = _json(kritenctl, "runners", "delete", "python")
    assert deleted == {"msg": "runner deleted successfully", "id": "python"}
    assert _json(kritenctl, "runners", "list") == []


def test_webhooks_and_users(kriten: ServiceProcess, kritenctl: Kritenctl) -> None:
    log_in(kritenctl, kriten.url)
    kritenctl.ok("runners", "create", "--name", "python", "--git-url", "file:///srv/tasks")
    kritenctl.ok("tasks", "create", "--name", "hello", "--runner", "python", "--command", "echo hi")

    hook = _json(kritenctl, "webhooks", "create", "--task", "hello", "--description", "from netbox")
    assert len(hook["secret"]) >= 16  # shown on create only
    assert hook["url"].endswith(f"/api/v1/webhooks/run/{hook['id']}")
    changed = _json(
        kritenctl, "webhooks", "update", hook["id"], "--no-enabled", "--scheme", "netbox"
    )
    assert (changed["enabled"], changed["scheme"]) == (False, "netbox")
    assert _json(kritenctl, "webhooks", "get", hook["id"])["secret"] == "************"
    assert [h["id"] for h in _json(kritenctl, "webhooks", "list")] == [hook["id"]]
    assert [h["id"] for h in _json(kritenctl, "webhooks", "list", "--all")] == [hook["id"]]
    kritenctl.ok("webhooks", "delete", hook["id"])
    assert _json(kritenctl, "webhooks", "list") == []

    group = _json(kritenctl, "groups", "create", "--name", "ops")
    user = _json(
        kritenctl,
        "users",
        "create",
        "--username",
        "alice",
        "--password",
        "s3cret-pass",
        "--group",
        "ops",
    )
    assert user["groups"] == [group["id"]]
    assert _json(kritenctl, "users", "get", user["id"])["username"] == "alice"
    assert _json(kritenctl, "users", "update", user["id"], "--set", "groups=[]")["groups"] == []
    usernames = {u["username"] for u in _json(kritenctl, "users", "list")}
    assert usernames == {"root", "alice"}

    role = _json(
        kritenctl,
        "roles",
        "create",
        "--name",
        "read-tasks",
        "--resource",
        "tasks",
        "--resource-id",
        "*",
        "--access",
        "read",
    )
    binding = _json(
        kritenctl,
        "rolebindings",
        "create",
        "--name",
        "ops-read-tasks",
        "--role-name",
        "read-tasks",
        "--subject-name",
        "ops",
    )
    assert binding["role_id"] == role["id"]
    found = _json(kritenctl, "rolebindings", "list", "--role-name", "read-tasks")
    assert [b["id"] for b in found] == [binding["id"]]

    kritenctl.ok("rolebindings", "delete", binding["id"])
    kritenctl.ok("users", "delete", user["id"])
    assert kritenctl("users", "get", user["id"]).exit_code == errors.NOT_FOUND
    # Nothing to change is a usage error, found before any request.
    assert kritenctl("users", "update", "root").exit_code == errors.USAGE
