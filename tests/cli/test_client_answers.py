"""What `kritenctl` makes of answers that are not Kriten's API answering (a redirect, a
proxy's web page, broken JSON, an object without the fields a command needs): a clear
`kritenctl:` error with its exit code, never a Python traceback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kritenctl.client import Client, expect
from kritenctl.errors import UNAVAILABLE, CliError
from kritenctl.inputs import read_raw
from kritenctl.paths import Route

ANSWERS = {
    "/redirect": (301, "text/plain", b"", {"Location": "https://kriten.example/"}),
    "/page": (200, "text/html; charset=utf-8", b"<html>Sign in</html>", {}),
    "/broken": (200, "application/json", b"{", {}),
    "/object": (200, "application/json", b'{"other": 1}', {}),
    "/log": (200, "text/plain; charset=utf-8", b"hello\n", {}),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, kind, body, headers = ANSWERS[self.path]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/redirect", "redirects to https://kriten.example/"),
        ("/page", "a web page, not Kriten's API"),
        ("/broken", "not valid JSON"),
    ],
)
def test_an_answer_that_is_not_the_api_is_a_clear_error(
    server: str, path: str, message: str
) -> None:
    with Client(server) as client, pytest.raises(CliError, match=message) as raised:
        client.call(Route("GET", path))
    assert raised.value.exit_code == UNAVAILABLE


def test_an_answer_without_the_fields_a_command_needs_is_a_clear_error(server: str) -> None:
    with Client(server) as client:
        answer = client.call(Route("GET", "/object"))
        assert expect(answer) == {"other": 1}
        with pytest.raises(CliError, match="wanted token") as raised:
            expect(answer, "token")
        assert raised.value.exit_code == UNAVAILABLE
        # A text answer (a job's log) is still text.
        assert client.call(Route("GET", "/log")) == "hello\n"


def test_inline_input_longer_than_a_file_name_is_the_input() -> None:
    inline = '{"devices": [' + ",".join(['"sw-0001"'] * 100) + "]}"
    assert read_raw(inline) == inline.encode()
