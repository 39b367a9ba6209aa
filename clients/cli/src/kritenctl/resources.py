"""The resources kept as collections, described once: their routes, the columns a table
shows, and the fields `create` and `update` take as options (any other with `--set`)."""

from __future__ import annotations

from dataclasses import dataclass

from kritenctl import paths


@dataclass(frozen=True)
class FieldOption:
    """An option setting one body field (or, for list filters, one query parameter)."""

    field: str
    flag: str
    help: str
    kind: type[str] | type[int] | type[bool] | type[list[str]] = str

    @property
    def parameter(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Resource:
    command: str
    help: str
    routes: paths.Collection
    key: str  # the item's path parameter and the field naming it
    columns: tuple[str, ...]
    fields: tuple[FieldOption, ...] = ()
    filters: tuple[FieldOption, ...] = ()
    all_help: str = ""  # help of `list --all`, where the api has an every-owner list


NAME = FieldOption("name", "--name", "The name (set on create)")
DESCRIPTION = FieldOption("description", "--description", "Free text")
PROVIDER = FieldOption("provider", "--provider", "`local` (default) or `active_directory`")

RESOURCES: tuple[Resource, ...] = (
    Resource(
        command="runners",
        help="Runners: the image and git repository tasks run from.",
        routes=paths.RUNNERS,
        key="name",
        columns=("name", "gitURL", "branch", "image"),
        fields=(
            NAME,
            FieldOption("gitURL", "--git-url", "The git repository (required on create)"),
            FieldOption("branch", "--branch", "The branch (default main)"),
            FieldOption("image", "--image", "The container image (Kubernetes executor)"),
        ),
    ),
    Resource(
        command="tasks",
        help="Tasks: a command run on a runner, with an optional input schema.",
        routes=paths.TASKS,
        key="name",
        columns=("name", "runner", "command", "synchronous"),
        fields=(
            NAME,
            FieldOption("runner", "--runner", "The runner (required on create)"),
            FieldOption("command", "--command", "Run with `sh -c` (required on create)"),
            FieldOption("synchronous", "--synchronous", "Answer with the finished job", bool),
            FieldOption("timeout_seconds", "--timeout-seconds", "The job's deadline", int),
            DESCRIPTION,
        ),
    ),
    Resource(
        command="cronjobs",
        help="Cronjobs: a task run on a schedule.",
        routes=paths.CRONJOBS,
        key="name",
        columns=("name", "task", "schedule", "disable", "owner"),
        fields=(
            NAME,
            FieldOption("task", "--task", "The task (required on create)"),
            FieldOption("schedule", "--schedule", "5-field cron, UTC (required on create)"),
            FieldOption("disable", "--disable", "Stop firing", bool),
        ),
    ),
    Resource(
        command="webhooks",
        help="Webhooks: signed URLs that run a task as their owner.",
        routes=paths.WEBHOOKS,
        key="id",
        columns=("id", "task", "scheme", "enabled", "description"),
        fields=(
            FieldOption("task", "--task", "The task it runs (required on create)"),
            DESCRIPTION,
            FieldOption("secret", "--secret", "At least 8 characters; generated when absent"),
            FieldOption("scheme", "--scheme", "auto, infrahub, standard, netbox or github"),
            FieldOption("filter", "--filter", "A JMESPath expression deliveries must pass"),
            FieldOption("enabled", "--enabled", "Accept deliveries", bool),
        ),
        all_help="Every user's webhooks (needs webhooks:read on *), not only yours",
    ),
    Resource(
        command="users",
        help="Users.",
        routes=paths.USERS,
        key="id",
        columns=("id", "username", "provider", "groups"),
        fields=(
            FieldOption("username", "--username", "The username (set on create)"),
            FieldOption("password", "--password", "The password (local users)"),
            PROVIDER,
            FieldOption("groups", "--group", "A group id or name; repeat for more", list[str]),
        ),
    ),
    Resource(
        command="groups",
        help="Groups of users.",
        routes=paths.GROUPS,
        key="id",
        columns=("id", "name", "provider", "users"),
        fields=(
            NAME,
            PROVIDER,
            FieldOption("users", "--user", "A member's user id; repeat for more", list[str]),
        ),
    ),
    Resource(
        command="roles",
        help="Roles: access to the items of one resource.",
        routes=paths.ROLES,
        key="id",
        columns=("id", "name", "resource", "resource_ids", "access"),
        fields=(
            NAME,
            FieldOption("resource", "--resource", "runners, tasks, jobs, …, or *"),
            FieldOption("resource_ids", "--resource-id", "A name or id, or *; repeat", list[str]),
            FieldOption("access", "--access", "read or write"),
        ),
    ),
    Resource(
        command="rolebindings",
        help="Role bindings: a role given to a group or a user.",
        routes=paths.ROLE_BINDINGS,
        key="id",
        columns=("id", "name", "role_name", "subject_kind", "subject_name"),
        fields=(
            NAME,
            FieldOption("role_name", "--role-name", "The role (required on create)"),
            FieldOption("subject_kind", "--subject-kind", "groups (default) or users"),
            FieldOption("subject_name", "--subject-name", "The group or username"),
            FieldOption("subject_provider", "--subject-provider", "default local"),
        ),
        filters=(
            FieldOption("role_name", "--role-name", "Only bindings of this role"),
            FieldOption("subject_name", "--subject-name", "Only bindings of this subject"),
        ),
    ),
    Resource(
        command="tokens",
        help="API tokens: keys for scripts, acting with their owner's rights.",
        routes=paths.API_TOKENS,
        key="id",
        columns=("id", "description", "enabled", "expires"),
        fields=(
            DESCRIPTION,
            FieldOption("expires", "--expires", "RFC 3339 with an offset; never by default"),
            FieldOption("enabled", "--enabled", "Accept the token", bool),
        ),
        all_help="Every user's tokens (needs apitokens:read on *), not only yours",
    ),
)
