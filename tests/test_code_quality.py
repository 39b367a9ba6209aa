"""The code standards, enforced by `make test`: ruff, mypy strict, import-linter.

Import-linter keeps the services independent of each other and the shared library
independent of every service (contracts in pyproject.toml).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TYPED_SOURCES = [
    "libs/common/src",
    "services/api/src",
    "services/ingress/src",
    "services/dispatcher/src",
    "services/collector/src",
    "launcher/src",
]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("ruff", "check", "."), id="ruff-check"),
        pytest.param(("ruff", "format", "--check", "."), id="ruff-format"),
        pytest.param(("mypy", *TYPED_SOURCES), id="mypy-strict"),
        pytest.param(("lint-imports",), id="import-linter"),
    ],
)
def test_code_meets_the_standards(command: tuple[str, ...]) -> None:
    tool, *arguments = command
    result = run(str(BIN / tool), *arguments)
    assert result.returncode == 0, result.stdout + result.stderr
