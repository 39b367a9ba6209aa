"""Which buttons a page offers: the same `authz` decisions the API's handlers enforce.

A button the caller may not use is not shown, but hiding is a courtesy only: the
request a button sends goes to the API, which decides again. Each function names the
handler whose checks it mirrors, and `tests/ui` checks that a button is shown exactly
when the API accepts its request.
"""

from __future__ import annotations

from typing import Any

from kriten_api.authz import may, may_owner_or, may_owner_or_admin, may_run_as_owner
from kriten_common.db.models import FINAL_JOB_STATUSES
from kriten_common.rbac import Principal


def may_cancel(principal: Principal, *, owner_id: str, job: dict[str, Any]) -> bool:
    """`routes.jobs.cancel_job`: the owner, or `jobs:write` on the task; not once final."""
    return job["status"] not in FINAL_JOB_STATUSES and may_owner_or(
        principal, owner_id=owner_id, resource="jobs", resource_id=job["task"], access="write"
    )


def may_run(principal: Principal, task: str) -> bool:
    """`routes.jobs.create_job`: `jobs:write` on the task."""
    return may(principal, "jobs", task, "write")


def may_send_to(principal: Principal, hook: dict[str, Any]) -> bool:
    """`routes.deliveries.send_test_delivery` and `redeliver`: write access to the webhook
    (`load_webhook`), and, for a non-owner, the right to run its task (`require_run_as_owner`)."""
    owner_id = hook["owner"]
    return may_owner_or(
        principal, owner_id=owner_id, resource="webhooks", resource_id=hook["id"], access="write"
    ) and may_run_as_owner(principal, owner_id=owner_id, task=hook["task"])


def may_rotate(principal: Principal, hook: dict[str, Any]) -> bool:
    """`routes.webhooks.rotate_secret`: write access to the webhook, and its owner or an
    admin."""
    owner_id = hook["owner"]
    return may_owner_or(
        principal, owner_id=owner_id, resource="webhooks", resource_id=hook["id"], access="write"
    ) and may_owner_or_admin(principal, owner_id=owner_id)


def may_read_all_webhooks(principal: Principal) -> bool:
    """`routes.webhooks.list_all_webhooks`: `webhooks:read` on every webhook."""
    return may(principal, "webhooks", "*", "read")
