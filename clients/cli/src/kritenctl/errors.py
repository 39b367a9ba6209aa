"""Exit codes scripts can rely on, and the one error kritenctl reports with one of them.

| code | meaning |
| --- | --- |
| 0 | done (with `--wait` or `-f`: the job succeeded) |
| 1 | the job ended failed, cancelled or skipped |
| 2 | usage: a bad option or argument, an unreadable input file (click's own code) |
| 3 | not authenticated or not allowed: no credentials, a bad or revoked token (401, 403) |
| 4 | not found (404) |
| 5 | the api could not answer: a connection error, a timeout, 5xx, 503 |
| 6 | the api refused the request: invalid input (400), a conflict (409), too large |
|   | (413), too many attempts (429), any other 4xx |
| 130 | interrupted (Ctrl-C) |

docs/cli.md repeats this table; change both together.
"""

from __future__ import annotations

OK = 0
JOB_FAILED = 1
USAGE = 2
AUTH = 3
NOT_FOUND = 4
UNAVAILABLE = 5
REFUSED = 6
INTERRUPTED = 130


class CliError(Exception):
    """What went wrong, in one line, and the exit code that says so to a script."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def exit_code_for_status(status: int) -> int:
    if status in (401, 403):
        return AUTH
    if status == 404:
        return NOT_FOUND
    if status >= 500:
        return UNAVAILABLE
    return REFUSED
