"""Static checks of the compose deployment: docker-compose.yml, the Dockerfile, the gateway.

No Docker engine runs where the tests run, so this module reads the files the way compose,
the image builder and nginx would, and checks what a `docker compose up --build` would
trip over: paths that do not exist, services that are not defined, a build target that is
not a stage of the Dockerfile, an image whose command is not a console script of the
package its builder installs, a container running as root, a secret committed in
the compose file, a gateway sending webhook runs to the wrong service.

Each check is a function returning the problems it found, so every one is also run on a
small broken sample to show that it can fail.
"""

from __future__ import annotations

import copy
import importlib
import json
import posixpath
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SERVICES = ("api", "ingress", "dispatcher", "collector")
INFRASTRUCTURE = ("rabbitmq", "postgres")
SECRET_VARIABLES = (
    "KRITEN_JWT_KEY",
    "KRITEN_ROOT_PASSWORD",
    "KRITEN_ENCRYPTION_KEYS",
    "KRITEN_TOKEN_KEY",
)
SECRET_NAME = re.compile(r"^KRITEN_\w*(?:KEY|KEYS|PASSWORD|SECRET)$")
# The only accepted form: the whole value is `${NAME:?message}` (or `${NAME?message}`), so
# compose refuses to start without it; `${NAME:-default}` would commit the default.
REQUIRED_INTERPOLATION = re.compile(r"^\$\{(?P<name>\w+):?\?[^}]*\}$")
EXPECTED_ENVIRONMENT = {
    "KRITEN_ENV": "production",
    "KRITEN_AMQP_URL": "amqp://kriten:kriten@rabbitmq:5672/",
    "KRITEN_DATABASE_URL": "postgresql+asyncpg://kriten:kriten@postgres:5432/kriten",
    "KRITEN_HOST": "0.0.0.0",  # noqa: S104 - in a container, the service must listen on all
    "KRITEN_PORT": "8080",
}
JOBS_DIR = "/var/lib/kriten/jobs"


# --------------------------------------------------------------------------- Dockerfile


DOCKERFILE_INSTRUCTIONS = frozenset(
    {
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)


class DockerfileError(ValueError):
    """The text is not a Dockerfile this parser understands."""


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]
    line: int = 0  # of its FROM


# What BuildKit accepts as a stage name (it lowercases the name first).
STAGE_NAME = re.compile(r"^[a-z][a-z0-9._-]*$")


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined and comments dropped.

    As in Docker: a line ending in a backslash continues on the next one, and comment
    lines (also those inside a continuation) and blank lines are ignored.
    """
    for raw in text.splitlines():
        directive = re.match(r"^#\s*escape\s*=\s*(\S)", raw.strip())
        if directive and directive.group(1) != "\\":
            raise DockerfileError("only the default escape character (\\) is supported")
        if raw.strip() and not raw.strip().startswith("#"):
            break
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, arguments = " ".join(part for part in pending if part).partition(" ")
        pending = []
        if keyword.upper() not in DOCKERFILE_INSTRUCTIONS:
            raise DockerfileError(f"line {start}: unknown instruction {keyword!r}")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    if pending:
        raise DockerfileError(f"line {start}: the continuation runs past the end of the file")
    return instructions


def split_stages(instructions: list[Instruction]) -> list[Stage]:
    """The stages, in order. As the builder does, rejects a FROM that is not
    `FROM [--flags] image [AS name]`, an invalid stage name and a name used twice."""
    stages: list[Stage] = []
    base = ""
    name: str | None = None
    line = 0
    body: list[Instruction] = []
    names: set[str] = set()
    for instruction in instructions:
        if instruction.keyword == "FROM":
            if base:
                stages.append(Stage(base, name, tuple(body), line))
            words = [word for word in instruction.arguments.split() if not word.startswith("--")]
            where = f"line {instruction.line}: FROM"
            if not words:
                raise DockerfileError(f"{where} names no image")
            if len(words) == 1:
                name = None
            elif len(words) == 3 and words[1].upper() == "AS":
                name = words[2].lower()
                if not STAGE_NAME.match(name):
                    raise DockerfileError(f"{where}: {words[2]!r} is not a valid stage name")
                if name in names:
                    raise DockerfileError(f"{where}: stage name {name!r} is already used")
                names.add(name)
            else:
                raise DockerfileError(f"{where} takes an image and optionally `AS name`")
            base, line, body = words[0], instruction.line, []
        elif not base and instruction.keyword != "ARG":
            raise DockerfileError(f"line {instruction.line}: {instruction.keyword} before FROM")
        else:
            body.append(instruction)
    if not base:
        raise DockerfileError("no FROM instruction")
    stages.append(Stage(base, name, tuple(body), line))
    return stages


def load_stages(path: Path) -> list[Stage]:
    return split_stages(parse_dockerfile(path.read_text()))


def split_flags(arguments: str) -> tuple[dict[str, str], list[str]]:
    """`--from=builder --chown=1:1 a b c/` -> ({"from": ..., "chown": ...}, [a, b, c/])."""
    flags: dict[str, str] = {}
    rest = arguments.strip()
    while match := re.match(r"--([\w-]+)(?:=(\S*))?\s+", rest):
        flags[match.group(1)] = match.group(2) or ""
        rest = rest[match.end() :]
    words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise DockerfileError(f"not a list of strings: {rest!r}")
    return flags, words


def _normalised(path: str) -> str:
    return posixpath.normpath(path.strip().lstrip("/")) if path.strip("/") else "."


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` and `?` stop at `/`, `**` crosses it."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def read_dockerignore(context: Path) -> list[str]:
    path = context / ".dockerignore"
    if not path.exists():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def is_ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (relative to the context) out of the context.

    A path is out when it or one of its parent directories is: for each, the last
    matching pattern decides, and a `!` pattern brings a path back.
    """
    parts = _normalised(path).split("/")
    for depth in range(1, len(parts) + 1):
        candidate = "/".join(parts[:depth])
        excluded = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            cleaned = _normalised(pattern.removeprefix("!"))
            if _dockerignore_regex(cleaned).match(candidate):
                excluded = not negated
        if excluded:
            return True
    return False


def copy_source_problems(instructions: list[Instruction], context: Path) -> list[str]:
    """COPY/ADD sources that a build from `context` would not find (`--from=` excluded)."""
    ignored = read_dockerignore(context)
    problems: list[str] = []
    for instruction in instructions:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        where = f"line {instruction.line}: {instruction.keyword}"
        flags, words = split_flags(instruction.arguments)
        if "from" in flags:
            continue
        if len(words) < 2:
            problems.append(f"{where} needs a source and a destination")
            continue
        *sources, destination = words
        if len(sources) > 1 and not destination.endswith("/"):
            problems.append(f"{where} of several sources needs a destination ending in /")
        for source in sources:
            if instruction.keyword == "ADD" and re.match(r"^(https?://|git@)", source):
                continue
            relative = _normalised(source)
            if relative == ".." or relative.startswith("../"):
                problems.append(f"{where} {source}: outside the build context")
            elif any(char in relative for char in "*?["):
                if not list(context.glob(relative)):
                    problems.append(f"{where} {source}: matches nothing in {context}")
            elif not (context / relative).exists():
                problems.append(f"{where} {source}: no such file in {context}")
            elif is_ignored(relative, ignored):
                problems.append(f"{where} {source}: excluded by .dockerignore")
    return problems


def _earlier_stage(
    stages: list[Stage], reference: str, before: int, *, by_index: bool = False
) -> int | None:
    """The index of the stage among stages[:before] that a FROM image or a COPY --from
    names (by name; by index too for --from), or None when it names an image."""
    if by_index and reference.isdigit():
        return int(reference) if int(reference) < before else None
    for index in range(before):
        if stages[index].name == reference.lower():
            return index
    return None


def _is_tagged_image(reference: str) -> bool:
    """`python:3.11-slim`, `registry:5000/a/b:1`, `a@sha256:...`: a tag or a digest."""
    return "@" in reference or ":" in reference.rpartition("/")[2]


def reference_problems(stages: list[Stage]) -> list[str]:
    """Each FROM and COPY --from names an earlier stage or a pinned image: a misspelt or
    later stage name would be pulled as an image from a registry (and fail, or worse)."""
    names = {stage.name for stage in stages if stage.name}
    problems: list[str] = []

    def check(reference: str, index: int, where: str, *, by_index: bool = False) -> None:
        earlier = _earlier_stage(stages, reference, index, by_index=by_index)
        if earlier is not None or reference == "scratch":
            return
        if reference.lower() in names or (by_index and reference.isdigit()):
            problems.append(f"{where} {reference}: a stage that is not defined before it")
        elif not _is_tagged_image(reference):
            problems.append(f"{where} {reference}: neither an earlier stage nor a tagged image")

    for index, stage in enumerate(stages):
        check(stage.base, index, f"line {stage.line}: FROM")
        for instruction in stage.instructions:
            if instruction.keyword in ("COPY", "ADD"):
                source = split_flags(instruction.arguments)[0].get("from")
                if source is not None:
                    check(source, index, f"line {instruction.line}: COPY --from", by_index=True)
    return problems


def _chain_from(stages: list[Stage], index: int) -> list[Stage]:
    chain = [stages[index]]
    while (parent := _earlier_stage(stages, chain[0].base, index)) is not None:
        index = parent
        chain.insert(0, stages[index])
    return chain


def stage_chain(stages: list[Stage], target: str | None = None) -> list[Stage]:
    """The stages an image is made of, the first one FROM an external image, the last one
    `target` (None: the last stage, what a build without --target makes). Settings (ENV,
    USER, WORKDIR, EXPOSE, CMD, ...) carry over along this chain."""
    if target is None:
        return _chain_from(stages, len(stages) - 1)
    matching = [i for i, stage in enumerate(stages) if stage.name == target.lower()]
    if not matching:
        raise DockerfileError(f"no stage named {target!r}")
    return _chain_from(stages, matching[0])


def _in_chain(chain: list[Stage], keyword: str) -> list[Instruction]:
    return [i for stage in chain for i in stage.instructions if i.keyword == keyword]


def image_environment(chain: list[Stage]) -> dict[str, str]:
    """The ENV of an image, as written (`$PATH` is not expanded)."""
    environment: dict[str, str] = {}
    for instruction in _in_chain(chain, "ENV"):
        words = shlex.split(instruction.arguments)
        if words and "=" not in words[0]:  # the legacy `ENV NAME value`
            environment[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, separator, value = word.partition("=")
            if not separator:
                raise DockerfileError(f"line {instruction.line}: ENV {word} has no value")
            environment[name] = value
    return environment


def final_command(chain: list[Stage]) -> tuple[list[str], list[str]]:
    """The command an image runs (ENTRYPOINT followed by CMD) and problems.

    As in the builder: CMD and ENTRYPOINT carry over from a parent stage, and an
    ENTRYPOINT clears the CMD unless its own stage sets one too.
    """
    entrypoint: Instruction | None = None
    cmd: Instruction | None = None
    for stage in chain:
        cmd_here = False
        for instruction in stage.instructions:
            if instruction.keyword == "CMD":
                cmd, cmd_here = instruction, True
            elif instruction.keyword == "ENTRYPOINT":
                entrypoint = instruction
                if not cmd_here:
                    cmd = None
    if entrypoint is None and cmd is None:
        return [], [f"no CMD or ENTRYPOINT: the image would run {chain[0].base}'s command"]
    command: list[str] = []
    problems: list[str] = []
    for chosen in (entrypoint, cmd):
        if chosen is None:
            continue
        if not chosen.arguments.startswith("["):
            problems.append(
                f"line {chosen.line}: {chosen.keyword} in shell form: /bin/sh would be PID 1 "
                "and the service would never see SIGTERM; use the exec form"
            )
            command += shlex.split(chosen.arguments)
            continue
        _, words = split_flags(chosen.arguments)
        if not words:
            problems.append(f"line {chosen.line}: empty {chosen.keyword}")
        command += words
    return command, problems


def runtime_user_problems(chain: list[Stage]) -> list[str]:
    """The image must run as a numeric, non-zero uid (the last USER along its chain).

    Numeric because Kubernetes' runAsNonRoot can only verify a number.
    """
    users = _in_chain(chain, "USER")
    if not users:
        return ["the image has no USER: the container runs as root"]
    user = users[-1].arguments.split(":")[0].strip()
    if user in ("root", "0"):
        return [f"line {users[-1].line}: USER {user} is root"]
    if not user.isdigit():
        return [f"line {users[-1].line}: USER {user} is not a numeric uid"]
    return []


def venv_copies(stages: list[Stage], chain: list[Stage]) -> list[tuple[Instruction, int]]:
    """(COPY, index of the source stage) for each COPY --from=<stage> of a venv in `chain`."""
    copies = []
    for stage in chain:
        index = next(i for i, candidate in enumerate(stages) if candidate is stage)
        for instruction in stage.instructions:
            if instruction.keyword != "COPY":
                continue
            flags, words = split_flags(instruction.arguments)
            source = _earlier_stage(stages, flags.get("from", ""), index, by_index=True)
            if source is not None and any(".venv" in word for word in words):
                copies.append((instruction, source))
    return copies


def venv_problems(stages: list[Stage], chain: list[Stage]) -> list[str]:
    """The image copies one venv, from a builder on the same base image: the venv's python
    is a link to that image's interpreter."""
    copies = venv_copies(stages, chain)
    if len(copies) != 1:
        return [f"the image copies {len(copies)} venvs from builder stages, not 1"]
    instruction, source = copies[0]
    builder_base = _chain_from(stages, source)[0].base
    if builder_base != chain[0].base:
        return [f"line {instruction.line}: venv from a {builder_base} stage into {chain[0].base}"]
    return []


def builder_chain(stages: list[Stage], chain: list[Stage]) -> list[Stage]:
    """The chain of the stage the image's venv comes from."""
    copies = venv_copies(stages, chain)
    if not copies:
        raise DockerfileError("the image copies no venv from a builder stage")
    return _chain_from(stages, copies[-1][1])


def _uv_syncs(chain: list[Stage]) -> list[tuple[Instruction, list[str]]]:
    return [
        (i, shlex.split(i.arguments)) for i in _in_chain(chain, "RUN") if "uv sync" in i.arguments
    ]


def _packages(words: list[str]) -> list[str]:
    named = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--package"]
    return named + [word.partition("=")[2] for word in words if word.startswith("--package=")]


def uv_sync_problems(chain: list[Stage], package: str) -> list[str]:
    """The builder chain installs `package` from the lock, without dev tools, as wheels:
    every `uv sync` is --frozen and --no-dev; the last one is --no-editable (an editable
    install would point at sources the runtime stage does not have) and installs exactly
    `package`."""
    syncs = _uv_syncs(chain)
    if not syncs:
        return ["no builder stage runs `uv sync`"]
    problems = [
        f"line {instruction.line}: `uv sync` lacks {flag}"
        for instruction, words in syncs
        for flag in ("--frozen", "--no-dev")
        if flag not in words
    ]
    last, words = syncs[-1]
    if "--no-editable" not in words:
        problems.append(f"line {last.line}: the last `uv sync` lacks --no-editable")
    if "--no-install-workspace" in words or "--only-install-workspace" in words:
        problems.append(f"line {last.line}: the last `uv sync` skips part of the install")
    if _packages(words) != [package]:
        installs = _packages(words) or "the whole workspace"
        problems.append(f"line {last.line}: the last `uv sync` installs {installs}")
    return problems


def shared_dependency_problems(
    stages: list[Stage], targets: list[str], package: str = "kriten-common"
) -> list[str]:
    """The third-party dependencies every target needs (those of `package`) are installed
    once, by one `uv sync` that all the targets' builders run first."""
    firsts = {}
    for target in targets:
        syncs = _uv_syncs(builder_chain(stages, stage_chain(stages, target)))
        if not syncs:
            return [f"{target}: no `uv sync`"]
        firsts[target] = syncs[0]
    lines = {instruction.line for instruction, _ in firsts.values()}
    if len(lines) != 1:
        where = ", ".join(f"{t} line {i.line}" for t, (i, _) in firsts.items())
        return [f"the targets' first `uv sync` differ ({where}): nothing is built once"]
    instruction, words = next(iter(firsts.values()))
    problems = []
    if "--no-install-workspace" not in words:
        problems.append(f"line {instruction.line}: the shared `uv sync` installs workspace code")
    if _packages(words) != [package]:
        problems.append(
            f"line {instruction.line}: the shared `uv sync` installs "
            f"{_packages(words) or 'the whole workspace'}, not {package}'s dependencies"
        )
    return problems


def _placed(chain: list[Stage], upto: Instruction, required: list[str]) -> set[str]:
    """Which `required` paths the COPYs of `chain` before `upto` put at the same place
    under the WORKDIR (a file, or a directory copied whole or with a parent)."""
    placed: set[str] = set()
    for instruction in (i for stage in chain for i in stage.instructions):
        if instruction is upto:
            return placed
        if instruction.keyword != "COPY":
            continue
        flags, words = split_flags(instruction.arguments)
        if "from" in flags or len(words) < 2:
            continue
        *sources, destination = words
        into_directory = (
            destination.endswith("/") or len(sources) > 1 or _normalised(destination) == "."
        )
        for source in map(_normalised, sources):
            for path in required:
                if source == path:  # the path itself
                    landing = (
                        posixpath.join(destination, posixpath.basename(path))
                        if into_directory
                        else destination
                    )
                elif source == "." or path.startswith(source + "/"):
                    # A parent directory: its contents land in the destination.
                    landing = posixpath.join(destination, posixpath.relpath(path, source))
                else:
                    continue
                if _normalised(landing) == path:
                    placed.add(path)
    return placed


def workspace_copy_problems(
    chain: list[Stage], manifests: list[str], sources: list[str]
) -> list[str]:
    """Before the first `uv sync` of the builder chain, each of `manifests` is copied to the
    same place under the WORKDIR (uv reads every workspace member's pyproject.toml where the
    root pyproject.toml says the member is); before the last one, each of `sources` (the
    directories of the members it installs) too."""
    syncs = _uv_syncs(chain)
    if not syncs:
        return ["no stage runs `uv sync`"]
    first, last = syncs[0][0], syncs[-1][0]
    placed_first = _placed(chain, first, manifests)
    placed_last = _placed(chain, last, manifests + sources)
    return [
        f"{path} is not copied to its place before the first `uv sync` (line {first.line})"
        for path in manifests
        if path not in placed_first
    ] + [
        f"{path} is not copied to its place before the last `uv sync` (line {last.line})"
        for path in manifests + sources
        if path not in placed_last
    ]


def workspace_members() -> list[str]:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    members: list[str] = root["tool"]["uv"]["workspace"]["members"]
    return members


def member_projects() -> dict[str, tuple[str, dict[str, Any]]]:
    """{project name: (member directory, its [project] table)} for the workspace."""
    projects = {}
    for member in workspace_members():
        project = tomllib.loads((REPO / member / "pyproject.toml").read_text())["project"]
        projects[project["name"]] = (member, project)
    return projects


def member_closure(package: str) -> list[str]:
    """The directories of `package` and of the workspace members it depends on."""
    projects = member_projects()
    found: list[str] = []
    pending = [package]
    while pending:
        name = pending.pop()
        if name not in projects or projects[name][0] in found:
            continue
        found.append(projects[name][0])
        for requirement in projects[name][1].get("dependencies", []):
            pending.append(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])
    return sorted(found)


def console_script_problems(command: list[str], package: str, scripts: dict[str, str]) -> list[str]:
    """The command is one of `package`'s console scripts (`scripts`, from its pyproject.toml),
    and the function that script calls can be imported and called."""
    if not command:
        return ["no command"]
    if command[0] not in scripts:
        return [f"{command[0]} is not a console script of {package} ({sorted(scripts)})"]
    target = scripts[command[0]]
    module_name, _, attribute = target.partition(":")
    try:
        found: object = importlib.import_module(module_name.strip())
        for part in attribute.split("[")[0].strip().split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, ValueError) as error:
        return [f"{command[0]} = {target}: {error}"]
    if not callable(found):
        return [f"{command[0]} = {target}: not callable"]
    return []


def target_command_problems(stages: list[Stage], target: str) -> tuple[str, list[str]]:
    """(the package a target installs, what is wrong with its command): the command must be
    a console script of the package the builder's last `uv sync` installs."""
    chain = stage_chain(stages, target)
    syncs = _uv_syncs(builder_chain(stages, chain))
    packages = _packages(syncs[-1][1]) if syncs else []
    if len(packages) != 1:
        return "", [f"{target}: the builder installs {packages or 'no single package'}"]
    command, problems = final_command(chain)
    projects = member_projects()
    if packages[0] not in projects:
        return packages[0], [f"{target}: {packages[0]} is not a workspace member"]
    scripts = projects[packages[0]][1].get("scripts", {})
    return packages[0], problems + console_script_problems(command, packages[0], scripts)


# --------------------------------------------------------------------------- compose


def load_compose() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(compose, dict), "docker-compose.yml is not a mapping"
    return compose


def environment_of(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment in either compose form (mapping, or list of NAME=value)."""
    raw = service.get("environment") or {}
    if isinstance(raw, dict):
        return {str(k): None if v is None else str(v) for k, v in raw.items()}
    entries = [str(entry).partition("=") for entry in raw]
    return {name: value if sep else None for name, sep, value in entries}


def depends_on_of(service: dict[str, Any]) -> dict[str, str]:
    """{dependency: condition}; the list form means service_started."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(map(str, raw), "service_started")
    return {str(k): str((v or {}).get("condition", "service_started")) for k, v in raw.items()}


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) for each mount, "bind" or "volume", in either syntax."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append(
                (str(entry.get("type")), str(entry.get("source")), str(entry.get("target")))
            )
            continue
        parts = str(entry).split(":")
        if len(parts) == 1:  # an anonymous volume
            mounts.append(("volume", "", parts[0]))
            continue
        source, target = parts[0], parts[1]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        mounts.append((kind, source, target))
    return mounts


def build_of(service: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """(context, dockerfile, target) as written, or None for a service without `build`."""
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return build, "Dockerfile", None
    target = build.get("target")
    return (
        str(build.get("context", ".")),
        str(build.get("dockerfile", "Dockerfile")),
        None if target is None else str(target),
    )


def compose_problems(compose: dict[str, Any], base: Path) -> list[str]:
    """Paths, names and references in a compose file that `compose up` would reject."""
    services: dict[str, Any] = compose.get("services") or {}
    volumes = set((compose.get("volumes") or {}).keys())
    problems: list[str] = []
    if not services:
        problems.append("no services")
    for name, service in services.items():
        build = build_of(service)
        if build is None and not service.get("image"):
            problems.append(f"{name}: neither build nor image")
        if build is not None:
            context_name, dockerfile, build_target = build
            context = (base / context_name).resolve()
            if not context.is_dir():
                problems.append(f"{name}: build context {context_name} does not exist")
            elif not (context / dockerfile).is_file():
                problems.append(f"{name}: dockerfile {dockerfile} does not exist in {context_name}")
            elif build_target is not None:
                try:
                    stages = load_stages(context / dockerfile)
                except DockerfileError as error:
                    problems.append(f"{name}: {dockerfile}: {error}")
                else:
                    if build_target.lower() not in {stage.name for stage in stages}:
                        problems.append(
                            f"{name}: target {build_target} is not a stage of {dockerfile}"
                        )
        for kind, source, target in volume_mounts(service):
            if kind == "bind" and not (base / source).exists():
                problems.append(f"{name}: bind mount source {source} does not exist")
            if kind == "volume" and source and source not in volumes:
                problems.append(f"{name}: volume {source} (at {target}) is not declared")
        for dependency, condition in depends_on_of(service).items():
            if dependency not in services:
                problems.append(f"{name}: depends on {dependency}, which is not defined")
            elif condition == "service_healthy" and not _has_healthcheck(services[dependency]):
                problems.append(f"{name}: waits for {dependency} healthy; it has no healthcheck")
    return problems


def _has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck") or {}
    return bool(check.get("test")) and not check.get("disable", False)


def secret_problems(compose: dict[str, Any], text: str) -> list[str]:
    """Secret variables must be required interpolations, in the parsed file and the text."""
    problems = []
    for name, service in (compose.get("services") or {}).items():
        for variable, value in environment_of(service).items():
            if SECRET_NAME.match(variable) and value is not None:
                match = REQUIRED_INTERPOLATION.match(value)
                if not match:
                    problems.append(f"{name}: {variable} is not a ${{VAR:?message}} interpolation")
                elif match.group("name") != variable:
                    problems.append(f"{name}: {variable} is taken from {match.group('name')}")
    # Anywhere else in the text (a label, a command, an unused extension field).
    assignment = re.compile(r"(?<![{\w])(KRITEN_\w*(?:KEY|KEYS|PASSWORD|SECRET))\s*[:=](.*)$")
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        for match in assignment.finditer(line):
            value = match.group(2).split(" #")[0].strip().strip("\"'")
            if value and not REQUIRED_INTERPOLATION.match(value):
                problems.append(f"line {number}: {match.group(1)} has a literal value")
    return problems


# --------------------------------------------------------------------------- nginx


class NginxError(ValueError):
    """The text is not an nginx configuration this parser understands."""


@dataclass(frozen=True)
class Directive:
    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...] | None = None


def _nginx_tokens(text: str) -> list[str]:
    token = re.compile(
        r"""\s+|#[^\n]*|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([{};])|([^\s{};"'#]+)"""
    )
    tokens: list[str] = []
    position = 0
    while position < len(text):
        match = token.match(text, position)
        if not match:
            raise NginxError(f"unexpected character at offset {position}")
        position = match.end()
        quoted = match.group(1) if match.group(1) is not None else match.group(2)
        if quoted is not None:
            tokens.append(quoted)
        elif match.group(3) or match.group(4):
            tokens.append(match.group(3) or match.group(4))
    return tokens


def parse_nginx(text: str) -> tuple[Directive, ...]:
    tokens = _nginx_tokens(text)

    def block(position: int, nested: bool) -> tuple[tuple[Directive, ...], int]:
        directives: list[Directive] = []
        words: list[str] = []
        while position < len(tokens):
            token = tokens[position]
            position += 1
            if token == ";":
                if not words:
                    raise NginxError("empty directive")
                directives.append(Directive(words[0], tuple(words[1:])))
                words = []
            elif token == "{":
                if not words:
                    raise NginxError("block without a name")
                children, position = block(position, nested=True)
                directives.append(Directive(words[0], tuple(words[1:]), children))
                words = []
            elif token == "}":
                if not nested or words:
                    raise NginxError(f"unexpected }} after {words or 'nothing'}")
                return tuple(directives), position
            else:
                words.append(token)
        if nested or words:
            raise NginxError("unexpected end: a missing } or ;")
        return tuple(directives), position

    return block(0, nested=False)[0]


@dataclass(frozen=True)
class Location:
    modifier: str  # "", "=", "^~", "~" or "~*"
    path: str
    proxy_pass: str | None  # with variables substituted
    uses_variables: bool


def _children(directives: tuple[Directive, ...], name: str) -> list[Directive]:
    return [d for d in directives if d.name == name]


def _variables(directives: tuple[Directive, ...]) -> dict[str, str]:
    return {d.args[0]: d.args[1] for d in _children(directives, "set") if len(d.args) == 2}


def gateway_servers(conf: tuple[Directive, ...]) -> list[Directive]:
    """The server blocks: under `http` in a main nginx.conf, at the top in a conf.d file."""
    https = _children(conf, "http")
    scope = (https[0].block or ()) if https else conf
    return _children(scope, "server")


def locations_of(server: Directive) -> list[Location]:
    body = server.block or ()
    server_variables = _variables(body)
    locations = []
    for location in _children(body, "location"):
        modifier, path = (
            (location.args[0], location.args[1])
            if len(location.args) == 2
            else ("", location.args[0])
        )
        inner = location.block or ()
        variables = server_variables | _variables(inner)
        passes = _children(inner, "proxy_pass")
        target = passes[-1].args[0] if passes else None
        uses_variables = target is not None and "$" in target
        if target is not None:
            for variable, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
                target = target.replace(variable, value)
        locations.append(Location(modifier, path, target, uses_variables))
    return locations


def route(locations: list[Location], uri: str) -> Location | None:
    """The location nginx picks for `uri`: exact, else the longest prefix unless a regex
    matches (a `^~` longest prefix skips the regexes)."""
    for location in locations:
        if location.modifier == "=" and location.path == uri:
            return location
    prefixes = [
        location
        for location in locations
        if location.modifier in ("", "^~") and uri.startswith(location.path)
    ]
    longest = max(prefixes, key=lambda location: len(location.path), default=None)
    if longest is not None and longest.modifier == "^~":
        return longest
    for location in locations:
        flags = re.IGNORECASE if location.modifier == "~*" else 0
        if location.modifier in ("~", "~*") and re.search(location.path, uri, flags):
            return location
    return longest


def gateway_problems(text: str, routes: dict[str, str]) -> list[str]:
    """Each URI in `routes` must be proxied to its `host:port`, with the URI unchanged."""
    conf = parse_nginx(text)
    servers = [
        server
        for server in gateway_servers(conf)
        if any(
            d.args and d.args[0].rpartition(":")[2] == "8080"
            for d in _children(server.block or (), "listen")
        )
    ]
    if not servers:
        return ["no server listens on 8080"]
    locations = locations_of(servers[0])
    resolvers = _children(conf, "resolver") + [
        d for http in _children(conf, "http") for d in _children(http.block or (), "resolver")
    ]
    resolvers += _children(servers[0].block or (), "resolver")
    problems = []
    for uri, expected in routes.items():
        location = route(locations, uri)
        if location is None or location.proxy_pass is None:
            problems.append(f"{uri}: no location proxies it")
            continue
        target = urlsplit(location.proxy_pass)
        where = f"{uri}: location {location.modifier} {location.path}".replace("  ", " ")
        if "$" in location.proxy_pass:
            problems.append(f"{where}: unresolved variable in {location.proxy_pass}")
            continue
        host = f"{target.hostname}:{target.port or 80}"
        if host != expected:
            problems.append(f"{where}: proxies to {host}, not {expected}")
        if target.path or target.query:
            problems.append(f"{where}: proxy_pass has a URI part, so nginx rewrites the URI")
        if location.uses_variables and not resolvers:
            problems.append(f"{where}: proxy_pass with variables needs a resolver")
    return problems


GATEWAY_ROUTES = {
    "/api/v1/webhooks/run/0123": "ingress:8080",
    "/api/v1/webhooks/run/": "ingress:8080",
    "/api/v1/webhooks": "api:8080",
    "/api/v1/webhooks/0123": "api:8080",
    "/api/v1/jobs/hello-kriten": "api:8080",
    "/api/v1/login": "api:8080",
    "/healthz": "api:8080",
    "/": "api:8080",
}


# =========================================================================== tests
# ----------------------------------------------------------------- the real files


def test_compose_file_parses_and_defines_the_services() -> None:
    services = load_compose()["services"]
    assert set(services) >= {*INFRASTRUCTURE, *SERVICES, "gateway"}


def test_compose_paths_names_and_references_resolve() -> None:
    assert compose_problems(load_compose(), COMPOSE_FILE.parent) == []


def test_compose_commits_no_secret() -> None:
    assert secret_problems(load_compose(), COMPOSE_FILE.read_text()) == []


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_is_built_from_its_target_of_the_root_dockerfile(service: str) -> None:
    build = build_of(load_compose()["services"][service])
    assert build is not None
    context, dockerfile, target = build
    assert (COMPOSE_FILE.parent / context).resolve() == REPO
    assert (REPO / dockerfile).resolve() == DOCKERFILE
    assert target == service


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_environment(service: str) -> None:
    environment = environment_of(load_compose()["services"][service])
    assert {k: environment.get(k) for k in EXPECTED_ENVIRONMENT} == EXPECTED_ENVIRONMENT
    for variable in SECRET_VARIABLES:
        value = environment.get(variable)
        assert value is not None, f"{variable} is not passed to {service}"
        match = REQUIRED_INTERPOLATION.match(value)
        assert match, f"{variable}: {value}"
        assert match.group("name") == variable


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_waits_for_healthy_broker_and_database(service: str) -> None:
    dependencies = depends_on_of(load_compose()["services"][service])
    for infrastructure in INFRASTRUCTURE:
        assert dependencies.get(infrastructure) == "service_healthy"


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_healthcheck_uses_python_on_healthz(service: str) -> None:
    test = load_compose()["services"][service]["healthcheck"]["test"]
    assert isinstance(test, list)
    assert test[:3] == ["CMD", "python", "-c"], "slim images have no curl or wget"
    code = test[3]
    compile(code, "<healthcheck>", "exec")
    assert "urllib" in code
    assert "http://127.0.0.1:8080/healthz" in code


def test_compose_infrastructure_images_and_healthchecks() -> None:
    services = load_compose()["services"]
    assert re.fullmatch(r"rabbitmq:(3\.13|4(\.\d+)*)(-management)?", services["rabbitmq"]["image"])
    assert re.fullmatch(r"postgres:16(\.\d+)*(-\w+)?", services["postgres"]["image"])
    for name in INFRASTRUCTURE:
        assert _has_healthcheck(services[name]), name
    postgres_mounts = volume_mounts(services["postgres"])
    assert ("volume", "postgres-data", "/var/lib/postgresql/data") in postgres_mounts


def test_compose_local_executor_shares_the_jobs_volume() -> None:
    services = load_compose()["services"]
    volumes = set()
    for name in ("dispatcher", "collector"):
        environment = environment_of(services[name])
        assert environment.get("KRITEN_EXECUTOR") == "local", name
        assert environment.get("KRITEN_JOBS_DIR") == JOBS_DIR, name
        mounted = {source for kind, source, target in volume_mounts(services[name])}
        named = {
            source
            for kind, source, target in volume_mounts(services[name])
            if kind == "volume" and target == JOBS_DIR
        }
        assert named, f"{name} has no named volume at {JOBS_DIR} (mounts: {mounted})"
        volumes |= named
    assert len(volumes) == 1, f"dispatcher and collector mount different volumes: {volumes}"


def test_compose_gateway_serves_port_8080_from_the_mounted_config() -> None:
    gateway = load_compose()["services"]["gateway"]
    assert gateway["image"] == "nginx:1.27-alpine"
    assert any(str(port).rsplit(":", 2)[-2:] == ["8080", "8080"] for port in gateway["ports"])
    configs = [
        source
        for kind, source, target in volume_mounts(gateway)
        if kind == "bind" and target.startswith("/etc/nginx/")
    ]
    assert configs == ["./deploy/gateway/nginx.conf"]


def test_gateway_routes_webhook_runs_to_ingress_and_the_rest_to_api() -> None:
    gateway = load_compose()["services"]["gateway"]
    (config,) = (s for k, s, t in volume_mounts(gateway) if t.startswith("/etc/nginx/"))
    assert gateway_problems((COMPOSE_FILE.parent / config).read_text(), GATEWAY_ROUTES) == []


def test_gateway_keeps_metrics_private() -> None:
    # /metrics is unauthenticated; Prometheus scrapes each service on the compose network.
    gateway = load_compose()["services"]["gateway"]
    (config,) = (s for k, s, t in volume_mounts(gateway) if t.startswith("/etc/nginx/"))
    (server,) = gateway_servers(parse_nginx((COMPOSE_FILE.parent / config).read_text()))
    location = route(locations_of(server), "/metrics")
    assert location is not None
    assert location.proxy_pass is None


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    patterns = read_dockerignore(REPO)
    for path in (".git", ".venv", "var", "var/kriten.db", ".env", ".mypy_cache"):
        assert is_ignored(path, patterns), path
    assert is_ignored("libs/common/src/kriten_common/__pycache__/x.pyc", patterns)
    for path in ("pyproject.toml", "uv.lock", "libs/common/src", "services/api/pyproject.toml"):
        assert not is_ignored(path, patterns), path


def test_dockerfile_parses_into_one_target_per_service() -> None:
    stages = load_stages(DOCKERFILE)
    names = [stage.name for stage in stages]
    for service in SERVICES:
        assert service in names, f"no stage `{service}` in {DOCKERFILE.name}"
    assert reference_problems(stages) == []


def test_the_per_service_dockerfiles_are_gone() -> None:
    # One Dockerfile at the root; a leftover copy would drift from it unnoticed.
    assert sorted(str(p.relative_to(REPO)) for p in REPO.glob("services/*/Dockerfile")) == []


def test_dockerfile_copies_only_what_the_context_has() -> None:
    assert copy_source_problems(parse_dockerfile(DOCKERFILE.read_text()), REPO) == []


def test_dockerfile_builds_the_shared_dependencies_once() -> None:
    assert shared_dependency_problems(load_stages(DOCKERFILE), list(SERVICES)) == []


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_builder_installs_the_service_from_the_lock(service: str) -> None:
    stages = load_stages(DOCKERFILE)
    builder = builder_chain(stages, stage_chain(stages, service))
    assert builder[0].base == "python:3.11-slim"
    assert uv_sync_problems(builder, f"kriten-{service}") == []
    manifests = ["pyproject.toml", "uv.lock"] + [f"{m}/pyproject.toml" for m in workspace_members()]
    members = member_closure(f"kriten-{service}")
    assert {"libs/common", f"services/{service}"} <= set(members)
    assert workspace_copy_problems(builder, manifests, members) == []
    environment = image_environment(builder)
    assert environment.get("UV_COMPILE_BYTECODE") == "1", "bytecode compiled at build time"
    assert environment.get("UV_PYTHON_DOWNLOADS") == "never"
    assert environment.get("UV_PROJECT_ENVIRONMENT") == "/app/.venv"


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_runtime_target(service: str) -> None:
    stages = load_stages(DOCKERFILE)
    chain = stage_chain(stages, service)
    assert chain[0].base == "python:3.11-slim"
    assert venv_problems(stages, chain) == []
    (copied,) = venv_copies(stages, chain)
    assert split_flags(copied[0].arguments)[1] == ["/app/.venv", "/app/.venv"]
    assert runtime_user_problems(chain) == []
    assert [i.arguments for stage in chain for i in stage.instructions if i.keyword == "USER"][
        -1
    ] in ("10001", "10001:10001")
    environment = image_environment(chain)
    assert environment.get("PATH") == "/app/.venv/bin:$PATH"
    assert {k: environment.get(k) for k in ("KRITEN_HOST", "KRITEN_PORT")} == {
        "KRITEN_HOST": "0.0.0.0",  # noqa: S104 - in a container, listen on every interface
        "KRITEN_PORT": "8080",
    }
    exposed = [i.arguments for stage in chain for i in stage.instructions if i.keyword == "EXPOSE"]
    assert "8080" in exposed
    # No builder in the image: only the venv is copied from one.
    assert not any(_uv_syncs(chain)), "the image itself runs `uv sync`"


def test_dispatcher_image_has_git_for_the_local_executor() -> None:
    chain = stage_chain(load_stages(DOCKERFILE), "dispatcher")
    installs = [i.arguments for stage in chain for i in stage.instructions if i.keyword == "RUN"]
    assert any("apt-get install" in run and re.search(r"\bgit\b", run) for run in installs)


@pytest.mark.parametrize("service", ["dispatcher", "collector"])
def test_local_executor_images_own_the_jobs_directory(service: str) -> None:
    # compose mounts a named volume there, which copies the directory's ownership.
    chain = stage_chain(load_stages(DOCKERFILE), service)
    runs = [i.arguments for stage in chain for i in stage.instructions if i.keyword == "RUN"]
    assert any(re.search(rf"install -d -o 10001 -g 10001 {JOBS_DIR}\b", run) for run in runs)


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_command_is_the_services_console_script(service: str) -> None:
    stages = load_stages(DOCKERFILE)
    command, problems = final_command(stage_chain(stages, service))
    assert problems == []
    assert command == [f"kriten-{service}"]
    package, problems = target_command_problems(stages, service)
    assert package == f"kriten-{service}"
    assert problems == []


# ----------------------------------------------------------------- the checks can fail


SAMPLE_DOCKERFILE = """\
# syntax is a comment to this parser
FROM python:3.11-slim AS builder
COPY present.txt \\
    # a comment inside a continuation is dropped
    missing.txt /app/
COPY --from=elsewhere /nowhere /app/
RUN uv sync --frozen

FROM python:3.11-slim
CMD ["kriten-sample"]
"""


def test_parser_joins_continuations_and_drops_comments() -> None:
    instructions = parse_dockerfile(SAMPLE_DOCKERFILE)
    assert [i.keyword for i in instructions] == ["FROM", "COPY", "COPY", "RUN", "FROM", "CMD"]
    assert instructions[1] == Instruction("COPY", "present.txt missing.txt /app/", 3)
    stages = split_stages(instructions)
    assert [(s.base, s.name, len(s.instructions), s.line) for s in stages] == [
        ("python:3.11-slim", "builder", 3, 2),
        ("python:3.11-slim", None, 1, 9),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "FROM python:3.11-slim\nRUNN true\n",
        "FROM python:3.11-slim\nRUN true \\\n",
        "RUN true\n",
        "FROM python:3.11-slim AS\n",
        "FROM python:3.11-slim AS a b\n",
        "FROM python:3.11-slim BS a\n",
        "FROM python:3.11-slim AS 1st\n",
        "FROM python:3.11-slim AS base\nFROM python:3.11-slim AS Base\n",
    ],
)
def test_parser_rejects_what_docker_would(text: str) -> None:
    with pytest.raises(DockerfileError):
        split_stages(parse_dockerfile(text))


CHAIN_DOCKERFILE = """\
FROM python:3.11-slim AS Base
ENV A=1 \\
    B="two words"
FROM base AS deps
ENV A 3
FROM python:3.11-slim AS other
ENV C=4
FROM deps AS api
"""


def test_stage_chain_follows_from_through_stages() -> None:
    stages = split_stages(parse_dockerfile(CHAIN_DOCKERFILE))
    assert stages[0].name == "base", "stage names are case-insensitive"
    assert [s.name for s in stage_chain(stages, "api")] == ["base", "deps", "api"]
    assert [s.name for s in stage_chain(stages, "other")] == ["other"]
    assert stage_chain(stages) == stage_chain(stages, "api"), "no target: the last stage"
    assert image_environment(stage_chain(stages, "api")) == {"A": "3", "B": "two words"}
    with pytest.raises(DockerfileError):
        stage_chain(stages, "apii")
    with pytest.raises(DockerfileError):
        image_environment(split_stages(parse_dockerfile("FROM python:3.11-slim\nENV A=1 B\n")))


def test_reference_problems() -> None:
    text = (
        "FROM python:3.11-slim AS base\n"
        "FROM bsae AS deps\n"
        "FROM later AS early\n"
        "FROM python:3.11-slim AS later\n"
        "COPY --from=biulder /a /a\n"
        "COPY --from=5 /a /a\n"
        "COPY --from=base /a /a\n"
        "COPY --from=0 /a /a\n"
        "COPY --from=python:3.11-slim /a /a\n"
        "FROM scratch\n"
    )
    assert reference_problems(split_stages(parse_dockerfile(text))) == [
        "line 2: FROM bsae: neither an earlier stage nor a tagged image",
        "line 3: FROM later: a stage that is not defined before it",
        "line 5: COPY --from biulder: neither an earlier stage nor a tagged image",
        "line 6: COPY --from 5: a stage that is not defined before it",
    ]


def test_missing_copy_source_is_reported(tmp_path: Path) -> None:
    (tmp_path / "present.txt").write_text("")
    problems = copy_source_problems(parse_dockerfile(SAMPLE_DOCKERFILE), tmp_path)
    assert problems == [f"line 3: COPY missing.txt: no such file in {tmp_path}"]


def test_copy_source_problems_for_ignored_outside_and_several_sources(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("")
    (tmp_path / ".dockerignore").write_text("# comment\na/*.txt\n")
    text = "FROM scratch\nCOPY a/x.txt /x\nCOPY ../up /up\nCOPY a a /dest\n"
    problems = copy_source_problems(parse_dockerfile(text), tmp_path)
    assert problems == [
        "line 2: COPY a/x.txt: excluded by .dockerignore",
        "line 3: COPY ../up: outside the build context",
        "line 4: COPY of several sources needs a destination ending in /",
    ]


def test_dockerignore_matching() -> None:
    patterns = ["**/__pycache__", "*.md", "build", "!README.md"]
    assert is_ignored("a/b/__pycache__/m.pyc", patterns)
    assert is_ignored("__pycache__", patterns)
    assert is_ignored("NOTES.md", patterns)
    assert not is_ignored("README.md", patterns)
    assert not is_ignored("docs/NOTES.md", patterns), "* does not cross /"
    assert is_ignored("build/x", patterns)
    assert not is_ignored("builder", patterns)


@pytest.mark.parametrize(
    ("final_stage", "expected"),
    [
        ("", ["the image has no USER: the container runs as root"]),
        ("USER root\n", ["line 3: USER root is root"]),
        ("USER 0:0\n", ["line 3: USER 0 is root"]),
        ("USER kriten\n", ["line 3: USER kriten is not a numeric uid"]),
        ("USER 10001\n", []),
    ],
)
def test_runtime_user_check(final_stage: str, expected: list[str]) -> None:
    text = "FROM python:3.11-slim AS builder\nFROM python:3.11-slim\n" + final_stage
    assert runtime_user_problems(stage_chain(split_stages(parse_dockerfile(text)))) == expected


def test_user_in_a_stage_counts_only_for_the_stages_built_on_it() -> None:
    unrelated = "FROM python:3.11-slim AS b\nUSER 10001\nFROM python:3.11-slim\n"
    assert runtime_user_problems(stage_chain(split_stages(parse_dockerfile(unrelated)))) != []
    parent = "FROM python:3.11-slim AS runtime\nUSER 10001\nFROM runtime AS api\n"
    assert runtime_user_problems(stage_chain(split_stages(parse_dockerfile(parent)))) == []
    reset = parent + "USER 0\n"
    assert runtime_user_problems(stage_chain(split_stages(parse_dockerfile(reset)))) != []


@pytest.mark.parametrize(
    ("text", "command", "problem"),
    [
        ('FROM p:1\nCMD ["python"]\nFROM p:1\nCMD ["kriten-api"]\n', ["kriten-api"], None),
        (
            'FROM p:1\nFROM p:1\nENTRYPOINT ["tini", "--"]\nCMD ["kriten-api"]\n',
            ["tini", "--", "kriten-api"],
            None,
        ),
        ("FROM p:1\nFROM p:1\nCMD kriten-api --flag\n", ["kriten-api", "--flag"], "shell form"),
        ('FROM p:1\nCMD ["python"]\nFROM p:1\n', [], "no CMD or ENTRYPOINT"),
        ("FROM p:1\nCMD []\n", [], "empty CMD"),
        # Inherited from a parent stage, as docker does.
        ('FROM p:1 AS runtime\nCMD ["kriten-api"]\nFROM runtime AS api\n', ["kriten-api"], None),
        # A later ENTRYPOINT clears the CMD a parent stage set.
        (
            'FROM p:1 AS runtime\nCMD ["kriten-api"]\nFROM runtime\nENTRYPOINT ["tini"]\n',
            ["tini"],
            None,
        ),
    ],
)
def test_final_command(text: str, command: list[str], problem: str | None) -> None:
    found, problems = final_command(stage_chain(split_stages(parse_dockerfile(text))))
    assert found == command
    assert (problem is None) == (problems == [])
    assert all(problem in p for p in problems if problem)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "FROM python:3.12-slim AS builder\nFROM python:3.11-slim\n"
            "COPY --from=builder /app/.venv /app/.venv\n",
            ["line 3: venv from a python:3.12-slim stage into python:3.11-slim"],
        ),
        (
            "FROM python:3.12-slim AS b0\nFROM b0 AS builder\nFROM python:3.11-slim AS rt\n"
            "FROM rt\nCOPY --from=builder /app/.venv /app/.venv\n",
            ["line 5: venv from a python:3.12-slim stage into python:3.11-slim"],
        ),
        ("FROM python:3.11-slim AS b\nFROM python:3.11-slim\n", ["the image copies 0 venvs"]),
        (
            "FROM python:3.11-slim AS b\nFROM python:3.11-slim\n"
            "COPY --from=b /app/.venv /app/.venv\nCOPY --from=0 /app/.venv /app/.venv\n",
            ["the image copies 2 venvs"],
        ),
        (
            "FROM python:3.11-slim AS b\nFROM python:3.11-slim\n"
            "COPY --from=b /app/.venv /app/.venv\n",
            [],
        ),
    ],
)
def test_venv_check(text: str, expected: list[str]) -> None:
    stages = split_stages(parse_dockerfile(text))
    problems = venv_problems(stages, stage_chain(stages))
    assert len(problems) == len(expected)
    assert all(p.startswith(e) for p, e in zip(problems, expected, strict=True)), problems


SHARED = "uv sync --frozen --no-dev --no-install-workspace --package kriten-common"
LAST = "uv sync --frozen --no-dev --no-editable --package kriten-api"


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        (SHARED, LAST, []),
        (SHARED, LAST.replace("--package ", "--package="), []),
        (SHARED.replace("--frozen ", ""), LAST, ["line 2: `uv sync` lacks --frozen"]),
        (SHARED, LAST.replace("--no-dev ", ""), ["line 5: `uv sync` lacks --no-dev"]),
        (
            SHARED,
            LAST.replace("--no-editable ", ""),
            ["line 5: the last `uv sync` lacks --no-editable"],
        ),
        (
            SHARED,
            LAST.replace(" --package kriten-api", ""),
            ["line 5: the last `uv sync` installs the whole workspace"],
        ),
        (
            SHARED,
            LAST.replace("kriten-api", "kriten-ingress"),
            ["line 5: the last `uv sync` installs ['kriten-ingress']"],
        ),
        (
            SHARED,
            LAST + " --no-install-workspace",
            ["line 5: the last `uv sync` skips part of the install"],
        ),
        ("true", "true", ["no builder stage runs `uv sync`"]),
    ],
)
def test_uv_sync_check(first: str, last: str, expected: list[str]) -> None:
    text = (
        f"FROM python:3.11-slim AS deps\nRUN {first}\n"
        f"FROM python:3.11-slim AS unrelated\nFROM deps AS build\nRUN {last}\n"
        "FROM python:3.11-slim\nCOPY --from=build /app/.venv /app/.venv\n"
    )
    stages = split_stages(parse_dockerfile(text))
    assert [s.name for s in builder_chain(stages, stage_chain(stages))] == ["deps", "build"]
    assert uv_sync_problems(builder_chain(stages, stage_chain(stages)), "kriten-api") == expected


def _two_targets(deps_a: str, deps_b: str) -> list[Stage]:
    text = (
        f"FROM python:3.11-slim AS deps\nRUN {SHARED}\n"
        f"FROM {deps_a} AS build-a\nRUN uv sync --frozen --package kriten-api\n"
        f"FROM {deps_b} AS build-b\nRUN uv sync --frozen --package kriten-ingress\n"
        "FROM python:3.11-slim AS a\nCOPY --from=build-a /app/.venv /app/.venv\n"
        "FROM python:3.11-slim AS b\nCOPY --from=build-b /app/.venv /app/.venv\n"
    )
    return split_stages(parse_dockerfile(text))


def test_shared_dependency_check() -> None:
    assert shared_dependency_problems(_two_targets("deps", "deps"), ["a", "b"]) == []
    assert shared_dependency_problems(_two_targets("deps", "python:3.11-slim"), ["a", "b"]) == [
        "the targets' first `uv sync` differ (a line 2, b line 6): nothing is built once"
    ]
    stages = _two_targets("deps", "deps")
    assert shared_dependency_problems(stages, ["a", "b"], "kriten-api") == [
        "line 2: the shared `uv sync` installs ['kriten-common'], not kriten-api's dependencies"
    ]
    text = "\n".join(
        [
            "FROM python:3.11-slim AS deps",
            "RUN uv sync --frozen --package kriten-common",
            "FROM deps AS build",
            "RUN uv sync --frozen --no-editable --package kriten-api",
            "FROM python:3.11-slim AS a",
            "COPY --from=build /app/.venv /app/.venv",
        ]
    )
    assert shared_dependency_problems(split_stages(parse_dockerfile(text)), ["a"]) == [
        "line 2: the shared `uv sync` installs workspace code"
    ]


def test_workspace_copy_check() -> None:
    manifests = [
        "pyproject.toml",
        "uv.lock",
        "libs/common/pyproject.toml",
        "launcher/pyproject.toml",
    ]
    text = (
        "FROM python:3.11-slim AS b\n"
        "COPY pyproject.toml uv.lock ./\n"
        "COPY libs/ libs/\n"
        # Flattened: uv would not find the launcher member where the root says it is.
        "COPY launcher/pyproject.toml ./\n"
        "RUN uv sync --frozen\n"
        "FROM b AS c\n"
        "COPY launcher/pyproject.toml launcher/\n"
        # The manifest alone: not the package's sources.
        "COPY services/api/pyproject.toml services/api/\n"
        "RUN uv sync --frozen --no-editable --package kriten-api\n"
        "FROM python:3.11-slim\n"
    )
    chain = stage_chain(split_stages(parse_dockerfile(text)), "c")
    assert workspace_copy_problems(chain, manifests, ["libs/common", "services/api"]) == [
        "launcher/pyproject.toml is not copied to its place before the first `uv sync` (line 5)",
        "services/api is not copied to its place before the last `uv sync` (line 9)",
    ]


def test_member_closure() -> None:
    assert member_closure("kriten-api") == ["libs/common", "services/api"]
    assert member_closure("kriten-launcher") == sorted(workspace_members())


@pytest.mark.parametrize(
    ("command", "scripts", "expected"),
    [
        (["kriten-api"], {"kriten-api": "kriten_api.__main__:main"}, None),
        ([], {"kriten-api": "kriten_api.__main__:main"}, "no command"),
        (["kriten-apii"], {"kriten-api": "kriten_api.__main__:main"}, "not a console script"),
        (["kriten-api"], {"kriten-api": "kriten_api.__main__:nope"}, "has no attribute"),
        (["kriten-api"], {"kriten-api": "kriten_nowhere.__main__:main"}, "No module named"),
        (["kriten-api"], {"kriten-api": "kriten_api.__main__:__name__"}, "not callable"),
    ],
)
def test_console_script_check(
    command: list[str], scripts: dict[str, str], expected: str | None
) -> None:
    problems = console_script_problems(command, "kriten-api", scripts)
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert expected in problems[0], problems


@pytest.mark.parametrize(
    ("package", "command", "expected"),
    [
        ("kriten-api", "kriten-api", []),
        (
            "kriten-api",
            "kriten-ingress",
            ["kriten-ingress is not a console script of kriten-api (['kriten-api'])"],
        ),
        ("kriten-nope", "kriten-api", ["t: kriten-nope is not a workspace member"]),
    ],
)
def test_target_command_check(package: str, command: str, expected: list[str]) -> None:
    text = (
        f"FROM python:3.11-slim AS build\nRUN uv sync --frozen --package {package}\n"
        f'FROM python:3.11-slim AS t\nCOPY --from=build /app/.venv /app/.venv\nCMD ["{command}"]\n'
    )
    assert target_command_problems(split_stages(parse_dockerfile(text)), "t") == (
        package,
        expected,
    )


def test_compose_problems_are_reported() -> None:
    broken = copy.deepcopy(load_compose())
    services = broken["services"]
    services["api"]["build"]["dockerfile"] = "Dockerfile.missing"
    services["ingress"]["build"]["target"] = "ingres"
    services["ingress"]["depends_on"]["brokerx"] = {"condition": "service_started"}
    services["gateway"]["volumes"] = ["./deploy/gateway/missing.conf:/etc/nginx/nginx.conf:ro"]
    services["dispatcher"]["volumes"] = ["undeclared:/var/lib/kriten/jobs"]
    del services["postgres"]["healthcheck"]
    services["collector"]["build"] = {"context": "nowhere"}
    problems = compose_problems(broken, COMPOSE_FILE.parent)
    assert "api: dockerfile Dockerfile.missing does not exist in ." in problems
    assert "ingress: target ingres is not a stage of Dockerfile" in problems
    assert "ingress: depends on brokerx, which is not defined" in problems
    assert "gateway: bind mount source ./deploy/gateway/missing.conf does not exist" in problems
    assert "dispatcher: volume undeclared (at /var/lib/kriten/jobs) is not declared" in problems
    assert "api: waits for postgres healthy; it has no healthcheck" in problems
    assert "collector: build context nowhere does not exist" in problems


def test_compose_target_in_a_broken_dockerfile_is_reported(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim AS api\nRUNN true\n")
    (tmp_path / "Good.Dockerfile").write_text("FROM python:3.11-slim AS api\n")
    compose = {
        "services": {
            "broken": {"build": {"context": ".", "target": "api"}},
            "good": {"build": {"context": ".", "dockerfile": "Good.Dockerfile", "target": "api"}},
            "untargeted": {"build": "."},
        }
    }
    assert compose_problems(compose, tmp_path) == [
        "broken: Dockerfile: line 2: unknown instruction 'RUNN'"
    ]


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"KRITEN_JWT_KEY": "hunter2"}, "api: KRITEN_JWT_KEY is not a ${VAR:?message}"),
        ({"KRITEN_TOKEN_KEY": "${KRITEN_TOKEN_KEY:-dev}"}, "api: KRITEN_TOKEN_KEY is not a"),
        ({"KRITEN_ROOT_PASSWORD": "${OTHER:?x}"}, "api: KRITEN_ROOT_PASSWORD is taken from OTHER"),
        (["KRITEN_ENCRYPTION_KEYS=abc"], "api: KRITEN_ENCRYPTION_KEYS is not a"),
        ({"KRITEN_JWT_KEY": "${KRITEN_JWT_KEY:?set it}"}, None),
        (["KRITEN_JWT_KEY"], None),  # passed through from the shell: nothing committed
    ],
)
def test_secret_check_on_the_environment(
    environment: dict[str, str] | list[str], expected: str | None
) -> None:
    problems = secret_problems({"services": {"api": {"environment": environment}}}, "")
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problems[0].startswith(expected)


def test_secret_check_on_the_text() -> None:
    text = (
        "# KRITEN_JWT_KEY: described in a comment\n"
        "x-unused:\n  KRITEN_TOKEN_KEY: s3cret\n"
        "  command: run --KRITEN_ROOT_PASSWORD=${KRITEN_ROOT_PASSWORD:?set it}\n"
    )
    assert secret_problems({}, text) == ["line 3: KRITEN_TOKEN_KEY has a literal value"]


SAMPLE_NGINX = """
events {}
http {
    resolver 127.0.0.11;
    server {
        listen 8080;
        set $ingress http://ingress:8080;  # comment ; with { braces }
        location ^~ /api/v1/webhooks/run/ { proxy_pass $ingress; }
        location = /exact { proxy_pass http://exact:1; }
        location ~ \\.php$ { proxy_pass http://php:9000; }
        location / { proxy_pass "http://api:8080"; }
    }
}
"""


def test_nginx_parser_and_routing() -> None:
    (server,) = gateway_servers(parse_nginx(SAMPLE_NGINX))
    locations = locations_of(server)
    assert [(loc.modifier, loc.path, loc.proxy_pass) for loc in locations] == [
        ("^~", "/api/v1/webhooks/run/", "http://ingress:8080"),
        ("=", "/exact", "http://exact:1"),
        ("~", "\\.php$", "http://php:9000"),
        ("", "/", "http://api:8080"),
    ]

    def target(uri: str) -> str | None:
        found = route(locations, uri)
        return found.proxy_pass if found else None

    assert target("/api/v1/webhooks/run/x.php") == "http://ingress:8080", "^~ beats regex"
    assert target("/exact") == "http://exact:1"
    assert target("/exact/more") == "http://api:8080"
    assert target("/index.php") == "http://php:9000"
    assert gateway_problems(SAMPLE_NGINX, GATEWAY_ROUTES) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("set $ingress http://ingress:8080", "set $ingress http://api:8080"),
            "/api/v1/webhooks/run/0123: location ^~ /api/v1/webhooks/run/: proxies to "
            "api:8080, not ingress:8080",
        ),
        (
            ("/api/v1/webhooks/run/ {", "/api/v1/webhooks/ {"),
            "/api/v1/webhooks/0123: location ^~ /api/v1/webhooks/: proxies to ingress:8080",
        ),
        (
            ('"http://api:8080"', "http://api:8080/"),
            "/api/v1/webhooks: location /: proxy_pass has a URI part",
        ),
        (
            ("resolver 127.0.0.11;", ""),
            "/api/v1/webhooks/run/0123: location ^~ /api/v1/webhooks/run/: proxy_pass with "
            "variables needs a resolver",
        ),
        (("location / {", "location /other/ {"), "/api/v1/webhooks: no location proxies it"),
        (("listen 8080", "listen 80"), "no server listens on 8080"),
    ],
)
def test_gateway_problems_are_reported(change: tuple[str, str], expected: str) -> None:
    assert change[0] in SAMPLE_NGINX
    problems = gateway_problems(SAMPLE_NGINX.replace(*change), GATEWAY_ROUTES)
    assert any(problem.startswith(expected) for problem in problems), problems


@pytest.mark.parametrize(
    "text", ["http { server { listen 8080 } }", "http { server { listen 8080; }", "}"]
)
def test_nginx_parser_rejects_broken_configs(text: str) -> None:
    with pytest.raises(NginxError):
        parse_nginx(text)
