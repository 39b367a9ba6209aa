"""The HTTP client: one `Route` from `paths` in, the answer's JSON (or text) out, and every
failure turned into a `CliError` carrying the api's own `{"error": ...}` message."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from kritenctl import __version__
from kritenctl.errors import UNAVAILABLE, CliError, exit_code_for_status
from kritenctl.paths import Route

API_TOKEN_PREFIX = "kri_"  # noqa: S105  (a prefix, not a password)
TIMEOUT_SECONDS = 30.0
Query = Mapping[str, str | int | bool | None]


def credential_headers(token: str) -> dict[str, str]:
    """An API token goes in Kriten's `Token` header; anything else is taken for a login
    token (a JWT), which the api reads as a Bearer token."""
    if not token:
        return {}
    if token.startswith(API_TOKEN_PREFIX):
        return {"Token": token}
    return {"Authorization": f"Bearer {token}"}


def _error_message(response: httpx.Response) -> str:
    text = response.text
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message: str = body["error"]
    else:
        message = " ".join(text.split())[:200] or response.reason_phrase
    return f"{message} (HTTP {response.status_code})"


def _decode(response: httpx.Response) -> Any:
    """The answer's JSON, or its text for a text answer (a job's log); anything else
    (a proxy's HTML page, broken JSON) is not Kriten's API answering."""
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/json"):
        try:
            return response.json()
        except ValueError:
            raise CliError("the server's answer is not valid JSON", UNAVAILABLE) from None
    if kind.startswith("text/html"):
        raise CliError(
            "the server answered with a web page, not Kriten's API: check the URL",
            UNAVAILABLE,
        )
    return response.text


def expect(answer: Any, *fields: str) -> dict[str, Any]:
    """`answer` as an object with `fields`, or a `CliError` saying the server's answer
    is not what this command needs (an older server, or not Kriten at all)."""
    if not isinstance(answer, dict) or any(name not in answer for name in fields):
        wanted = ", ".join(fields) or "an object"
        raise CliError(f"unexpected answer from the server (wanted {wanted})", UNAVAILABLE)
    return answer


class Client:
    def __init__(self, url: str, token: str = "", *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"User-Agent": f"kritenctl/{__version__}", **credential_headers(token)},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _request(
        self,
        route: Route,
        params: Mapping[str, str],
        query: Query | None,
        body: Any,
        content: bytes | None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        wanted = {k: v for k, v in (query or {}).items() if v is not None}
        unknown = set(wanted) - set(route.query)
        if unknown:
            # Only what `paths` declares, so the OpenAPI test covers every query name too.
            raise ValueError(f"{route.template} takes no query {sorted(unknown)}")
        text_query = {
            k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in wanted.items()
        }
        if body is not None:
            content = json.dumps(body).encode()
        extra = {"Content-Type": "application/json"} if content is not None else {}
        return self._http.build_request(
            route.method,
            route.path(**params),
            params=text_query,
            content=content,
            headers={**extra, **(headers or {})},
        )

    def call(
        self,
        route: Route,
        params: Mapping[str, str] | None = None,
        *,
        query: Query | None = None,
        body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The answer's JSON (text for a text answer); a `CliError` for any failure."""
        request = self._request(route, params or {}, query, body, content, headers)
        response = self._send(request, stream=False)
        if response.status_code >= 400:
            raise CliError(_error_message(response), exit_code_for_status(response.status_code))
        if response.is_redirect:
            # Not followed: a credential or a body must not go where the server points.
            where = response.headers.get("location", "elsewhere")
            raise CliError(f"the server redirects to {where}: use that URL", UNAVAILABLE)
        return _decode(response)

    @contextmanager
    def stream(
        self, route: Route, params: Mapping[str, str], *, query: Query | None = None
    ) -> Iterator[Iterator[str]]:
        """The answer's text as it arrives, without a read timeout: a followed log is
        quiet for as long as the job prints nothing."""
        request = self._request(route, params, query, None, None)
        request.extensions["timeout"] = httpx.Timeout(TIMEOUT_SECONDS, read=None).as_dict()
        response = self._send(request, stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                raise CliError(_error_message(response), exit_code_for_status(response.status_code))
            yield self._chunks(response)
        finally:
            response.close()

    def _chunks(self, response: httpx.Response) -> Iterator[str]:
        try:
            yield from response.iter_text()
        except httpx.HTTPError as problem:
            raise CliError(f"{self.url}: the stream broke off: {problem}", UNAVAILABLE) from None

    def _send(self, request: httpx.Request, *, stream: bool) -> httpx.Response:
        try:
            return self._http.send(request, stream=stream)
        except httpx.TimeoutException:
            raise CliError(f"{self.url} did not answer in time", UNAVAILABLE) from None
        except httpx.HTTPError as problem:
            raise CliError(f"cannot reach {self.url}: {problem}", UNAVAILABLE) from None
