"""Webhook signature verification for the run endpoint (spec: docs/SIGNATURES.md).

Pure functions, no I/O: the caller passes headers, the raw body, the candidate secrets and
the clock, and gets back either a `Verified` result or a `VerificationFailed` whose
`reason` goes to the delivery log (never to the HTTP response). The `sign_*` helpers
produce the header values each sender would send, for tests and test deliveries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from kriten_common.webhook_schemes import CONFIGURED_SCHEMES, Scheme
from kriten_common.webhook_signing import GITHUB_PREFIX, plain_key, standard_key, standard_mac
from kriten_ingress.json_depth import nesting_exceeds

__all__ = [
    "Scheme",
    "SecretMatch",
    "VerificationFailed",
    "Verified",
    "verify",
]

SecretMatch = Literal["current", "previous"]

_WEBHOOK_ID = "webhook-id"
_WEBHOOK_TIMESTAMP = "webhook-timestamp"
_WEBHOOK_SIGNATURE = "webhook-signature"
_NETBOX_SIGNATURE = "x-hook-signature"
_GITHUB_SIGNATURE = "x-hub-signature-256"
_WANTED_HEADERS = frozenset(
    {
        _WEBHOOK_ID,
        _WEBHOOK_TIMESTAMP,
        _WEBHOOK_SIGNATURE,
        _NETBOX_SIGNATURE,
        _GITHUB_SIGNATURE,
    }
)

# In detection order (docs/SIGNATURES.md, "Choosing the scheme").
_REQUIRED_HEADERS: dict[Scheme, tuple[str, ...]] = {
    "standard": (_WEBHOOK_ID, _WEBHOOK_TIMESTAMP, _WEBHOOK_SIGNATURE),
    "netbox": (_NETBOX_SIGNATURE,),
    "github": (_GITHUB_SIGNATURE,),
}

# Infrahub's events are a few kilobytes and a few levels deep. Bodies beyond these bounds
# are checked as sent and never re-serialised: that work is done before the signature
# is known to be good, so it must stay cheap whatever an anonymous client sends.
INFRAHUB_FALLBACK_MAX_BYTES = 64 * 1024
INFRAHUB_FALLBACK_MAX_DEPTH = 64

_SHA256_SIZE = hashlib.sha256().digest_size
_SHA512_SIZE = hashlib.sha512().digest_size
# Unix seconds stay at 10 digits until the year 2286; the cap keeps int() cheap on junk.
_MAX_TIMESTAMP_DIGITS = 12


@dataclass(frozen=True, slots=True)
class Verified:
    """An accepted delivery: which scheme verified it, its dedup key, which secret matched."""

    scheme: Scheme
    idempotency_key: str
    secret_matched: SecretMatch


class VerificationFailed(Exception):
    """The delivery is refused; `reason` is for the delivery log only.

    The reason is one of a fixed set of short phrases and never contains a secret or a
    signature value, so it is safe to log verbatim.
    """

    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify(
    *,
    configured_scheme: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[tuple[str, SecretMatch]],
    now: float,
    replay_window_seconds: float = 300.0,
) -> Verified:
    """Verify one delivery against the webhook's secrets (current first, then previous).

    Raises `VerificationFailed` for every refusal, including a misconfigured webhook, so
    the caller has a single path to the uniform 401.
    """
    if configured_scheme not in CONFIGURED_SCHEMES:
        raise VerificationFailed("unknown configured scheme")
    if not secrets:
        raise VerificationFailed("no secret configured")
    found = _pick_headers(headers)
    scheme = _choose_scheme(CONFIGURED_SCHEMES[configured_scheme], found)
    if scheme == "standard":
        return _verify_standard(found, body, secrets, now, replay_window_seconds)
    if scheme == "netbox":
        return _verify_netbox(found, body, secrets, now, replay_window_seconds)
    return _verify_github(found, body, secrets)


def _usable_keys(
    secrets: Sequence[tuple[str, SecretMatch]], derive: Callable[[str], bytes]
) -> list[tuple[bytes, SecretMatch]]:
    keys: list[tuple[bytes, SecretMatch]] = []
    for secret, which in secrets:
        try:
            keys.append((derive(secret), which))
        except ValueError:
            # A broken secret must not hide a good one during rotation; if none is usable
            # the caller reports that instead of a misleading 'bad signature'.
            continue
    if not keys:
        raise VerificationFailed("no usable secret")
    return keys


# --- header handling and scheme choice ---


def _pick_headers(headers: Mapping[str, str]) -> dict[str, str]:
    # One pass over the headers instead of a case-insensitive lookup per name: callers
    # may pass a plain dict. First occurrence wins, as aiohttp's `get` does; empty values
    # count as absent so that an empty header cannot steer scheme detection.
    found: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in _WANTED_HEADERS and value and key not in found:
            found[key] = value
    return found


def _has_headers(scheme: Scheme, found: Mapping[str, str]) -> bool:
    return all(name in found for name in _REQUIRED_HEADERS[scheme])


def _detect(found: Mapping[str, str]) -> Scheme | None:
    # Dict order is the detection order of the spec.
    for scheme in _REQUIRED_HEADERS:
        if _has_headers(scheme, found):
            return scheme
    return None


def _choose_scheme(pinned: Scheme | None, found: Mapping[str, str]) -> Scheme:
    detected = _detect(found)
    if pinned is None:
        if detected is None:
            raise VerificationFailed("missing signature headers")
        return detected
    if _has_headers(pinned, found):
        return pinned
    # Distinguishing "signed, but the other way" from "not signed" helps whoever reads
    # the delivery log fix a wrong scheme setting.
    raise VerificationFailed("scheme mismatch" if detected else "missing signature headers")


# --- Standard Webhooks / Infrahub ---


def _verify_standard(
    found: Mapping[str, str],
    body: bytes,
    secrets: Sequence[tuple[str, SecretMatch]],
    now: float,
    window: float,
) -> Verified:
    webhook_id = found[_WEBHOOK_ID]
    timestamp = found[_WEBHOOK_TIMESTAMP]
    # Checked before any HMAC or JSON work so stale or junk requests cost almost nothing.
    _check_window(_parse_unix_seconds(timestamp), now, window)
    given = _standard_signatures(found[_WEBHOOK_SIGNATURE])
    if not given:
        # No entry can match, so neither HMAC nor the re-serialisations are worth doing.
        raise VerificationFailed("bad signature")
    keys = _usable_keys(secrets, standard_key)
    # The id.timestamp. prefix is hashed once per key and the state copied per body.
    macs = [(standard_mac(key, webhook_id, timestamp), which) for key, which in keys]

    # The raw bytes first: that is what every sender but an affected Infrahub signs, and
    # a refusal then costs one HMAC per secret, with no parsing.
    matched = _match_standard(macs, body, given)
    if matched is None:
        matched = _match_infrahub_rendering(macs, body, given)
    if matched is None:
        raise VerificationFailed("bad signature")

    # Authenticated from here on. Infrahub gives every retry a new webhook-id but keeps
    # the event id in the body.
    parsed = _load_json(body)
    key = parsed.get("id") if isinstance(parsed, dict) else None
    return Verified(
        scheme="standard",
        idempotency_key=key if isinstance(key, str) and key else webhook_id,
        secret_matched=matched,
    )


def _match_infrahub_rendering(
    macs: Sequence[tuple[hmac.HMAC, SecretMatch]], body: bytes, given: Sequence[bytes]
) -> SecretMatch | None:
    """The secret that signed one of Infrahub's re-serialisations of `body`, if any.

    This runs before anything is authenticated and parses and renders the body several
    times, so it is kept to what Infrahub can send: a JSON object (the `{` test skips the
    parse of anything else), small, and shallow. The byte scan for depth costs far less
    than the parse it saves.
    """
    if body[:1] != b"{" or len(body) > INFRAHUB_FALLBACK_MAX_BYTES:
        return None
    if nesting_exceeds(body, INFRAHUB_FALLBACK_MAX_DEPTH):
        return None
    parsed = _load_json(body)
    if not isinstance(parsed, dict):
        return None
    for candidate in _infrahub_reserialisations(body, parsed):
        matched = _match_standard(macs, candidate, given)
        if matched is not None:
            return matched
    return None


def _parse_unix_seconds(value: str) -> int:
    # int() alone would also take '+1', ' 1', '1_0' and non-ASCII digits, none of which a
    # sender produces; the raw header text is what was signed, so insist on plain digits.
    if not (value.isascii() and value.isdigit() and len(value) <= _MAX_TIMESTAMP_DIGITS):
        raise VerificationFailed("malformed timestamp")
    return int(value)


def _check_window(timestamp: float, now: float, window: float) -> None:
    if now - timestamp > window:
        raise VerificationFailed("stale timestamp")
    if timestamp - now > window:
        raise VerificationFailed("future timestamp")


def _standard_signatures(header: str) -> list[bytes]:
    saw_v1 = False
    digests: list[bytes] = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        saw_v1 = True
        try:
            digest = base64.b64decode(encoded, validate=True)
        except ValueError:
            # Covers bad base64 and non-ASCII text; such an entry can never match.
            continue
        if len(digest) == _SHA256_SIZE:
            digests.append(digest)
    if not saw_v1:
        raise VerificationFailed("no v1 signature")
    return digests


def _match_standard(
    macs: Iterable[tuple[hmac.HMAC, SecretMatch]], body: bytes, given: Sequence[bytes]
) -> SecretMatch | None:
    for prefixed, which in macs:
        mac = prefixed.copy()
        mac.update(body)
        expected = mac.digest()
        for digest in given:
            if hmac.compare_digest(expected, digest):
                return which
    return None


def _infrahub_reserialisations(body: bytes, parsed: dict[str, object]) -> list[bytes]:
    try:
        compact = json.dumps(parsed, separators=(",", ":")).encode("ascii")
        spaced = json.dumps(parsed).encode("ascii")
        if not _is_python_rendering(body, parsed, compact, spaced):
            return []
    except (ValueError, RecursionError):
        return []
    return [candidate for candidate in dict.fromkeys((compact, spaced)) if candidate != body]


def _is_python_rendering(
    body: bytes, parsed: dict[str, object], compact: bytes, spaced: bytes
) -> bool:
    # The fallback trusts the parsed object, not the bytes. Requiring the bytes to be
    # exactly one of json.dumps' renderings of that object (which is what Infrahub's
    # HTTP client sends) stops an unsigned variant of a signed body, e.g. one with an
    # extra duplicate key that a first-key-wins parser downstream would read differently.
    if body in (compact, spaced):
        return True
    if body.isascii():
        # With only ASCII there is nothing to escape, so the raw-UTF-8 renderings would
        # equal the two above.
        return False
    return body in (
        json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        json.dumps(parsed, ensure_ascii=False).encode("utf-8"),
    )


def _load_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        # ValueError covers bad JSON, bad UTF-8 and oversized integers; deep nesting
        # raises RecursionError. Any of them simply means "not a JSON object".
        return None


# --- NetBox / Nautobot ---


def _verify_netbox(
    found: Mapping[str, str],
    body: bytes,
    secrets: Sequence[tuple[str, SecretMatch]],
    now: float,
    window: float,
) -> Verified:
    given = _hex_digest(found[_NETBOX_SIGNATURE], _SHA512_SIZE)
    keys = _usable_keys(secrets, plain_key)
    matched = _match_hex(keys, body, given, "sha512")
    # The body is parsed only once it is known to be authentic: its timestamp is trusted
    # because it is signed, and junk bodies then cost no parsing.
    parsed = _load_json(body)
    if isinstance(parsed, dict):
        timestamp = _iso_timestamp(parsed.get("timestamp"))
        if timestamp is not None:
            _check_window(timestamp, now, window)
    # NetBox sends no delivery id, and a retry resends the identical body.
    return Verified(
        scheme="netbox",
        idempotency_key=hashlib.sha256(body).hexdigest(),
        secret_matched=matched,
    )


def _iso_timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        # NetBox and Nautobot store and send UTC.
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# --- GitHub ---


def _verify_github(
    found: Mapping[str, str], body: bytes, secrets: Sequence[tuple[str, SecretMatch]]
) -> Verified:
    header = found[_GITHUB_SIGNATURE]
    if not header.startswith(GITHUB_PREFIX):
        raise VerificationFailed("malformed signature")
    given = _hex_digest(header[len(GITHUB_PREFIX) :], _SHA256_SIZE)
    keys = _usable_keys(secrets, plain_key)
    matched = _match_hex(keys, body, given, "sha256")
    # GitHub signs neither a timestamp nor X-GitHub-Delivery, so a captured delivery can
    # be resent with any delivery id: only the signed body can key it. A resend then maps
    # to the job it already made. Two distinct events never share a body (each carries
    # its own commits, ids or timestamps), and GitHub's own redelivery resends the body.
    return Verified(
        scheme="github",
        idempotency_key=hashlib.sha256(body).hexdigest(),
        secret_matched=matched,
    )


# --- shared by NetBox and GitHub ---


def _hex_digest(value: str, size: int) -> bytes:
    # Comparing decoded bytes accepts either hex case and avoids compare_digest's
    # TypeError on non-ASCII str input.
    if len(value) != 2 * size or not value.isascii():
        raise VerificationFailed("malformed signature")
    try:
        digest = bytes.fromhex(value)
    except ValueError:
        raise VerificationFailed("malformed signature") from None
    if len(digest) != size:
        # fromhex skips whitespace, so a right-length string can still decode short.
        raise VerificationFailed("malformed signature")
    return digest


def _match_hex(
    keys: Iterable[tuple[bytes, SecretMatch]],
    body: bytes,
    given: bytes,
    digestmod: str,
) -> SecretMatch:
    for key, which in keys:
        if hmac.compare_digest(hmac.new(key, body, digestmod).digest(), given):
            return which
    raise VerificationFailed("bad signature")
