"""Admission: the one path by which a job comes to exist (api, ingress and scheduler).

Authorize the caller (or the webhook's owner) on the task, validate the input against
the task's schema, choose the job id, and build the `JobRequested` to publish. Pure: the
caller loads the principal and the task and publishes the result.
"""

from __future__ import annotations

import hashlib
import secrets

from kriten_common import errors
from kriten_common.concurrency import DEFAULT_POLICY, check_policy, key_value
from kriten_common.db.models import Task
from kriten_common.messages import JobRequested, JobSource
from kriten_common.rbac import Principal, is_allowed

# The schema rules live in `task_schemas`; re-exported (the `as` form) for the callers
# that import them from here.
from kriten_common.task_schemas import check_schema as check_schema
from kriten_common.task_schemas import validate_input as validate_input

# Kubernetes' generateName alphabet (no vowels, no look-alikes), so ids read like Kriten's.
SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Longer than Kriten's 5 characters: a random collision would make the dispatcher take a
# new job for a redelivery of an old one and silently drop it.
SUFFIX_LENGTH = 10
MAX_JOB_ID_LENGTH = 63


def random_suffix() -> str:
    return "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))


def derived_suffix(key: str) -> str:
    """A stable suffix for an idempotency key: a sender's retry maps to the same job."""
    number = int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")
    chars = []
    for _ in range(SUFFIX_LENGTH):
        number, index = divmod(number, len(SUFFIX_ALPHABET))
        chars.append(SUFFIX_ALPHABET[index])
    return "".join(chars)


def job_id_for(task: str, suffix: str) -> str:
    """`<task>-<suffix>`, the task part shortened so the id stays a valid Kubernetes name."""
    room = MAX_JOB_ID_LENGTH - len(suffix) - 1
    return f"{task[:room].rstrip('-.')}-{suffix}"


def admit(
    *,
    principal: Principal,
    task: Task,
    raw_input: bytes,
    source: JobSource,
    idempotency_key: str | None = None,
    webhook_id: str | None = None,
    delivery_id: str | None = None,
    correlation_id: str | None = None,
    job_id: str | None = None,
) -> JobRequested:
    """The `JobRequested` for this input, or a domain error saying why not.

    `job_id` overrides the chosen id: the scheduler names each firing after its cronjob and
    minute, so replicas that fire the same minute request the same job.
    """
    if not is_allowed(
        principal.permissions, resource="jobs", resource_id=task.name, access="write"
    ):
        raise errors.Forbidden(errors.FORBIDDEN_MESSAGE)
    try:
        text = raw_input.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidInput("input must be UTF-8 text") from None
    validate_input(task.schema_, text)
    # Once, here: every dispatcher replica then orders the job by the same key.
    key = key_value(task.concurrency_key, text) if task.concurrency_key else None
    if job_id is None:
        suffix = derived_suffix(idempotency_key) if idempotency_key else random_suffix()
        job_id = job_id_for(task.name, suffix)
    return JobRequested(
        job_id=job_id,
        task=task.name,
        owner=principal.username,
        owner_id=principal.user_id,
        source=source,
        input=text,
        webhook_id=webhook_id,
        delivery_id=delivery_id,
        correlation_id=correlation_id,
        concurrency_key=key,
        concurrency_policy=check_policy(task.concurrency_policy) or DEFAULT_POLICY,
    )
