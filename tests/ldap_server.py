"""A real OpenLDAP server (Debian's `slapd`) on loopback, for the LDAP login tests.

`running_slapd(directory)` makes everything it needs inside `directory` and nothing
anywhere else (the system's /etc/ldap/slapd.d is never read or written; only the
packaged schema files are included):

- a throwaway CA and a server certificate for `localhost` and 127.0.0.1, made with
  `cryptography`, plus a second CA that signed nothing (for the wrong-CA test);
- `slapd.conf` with TLS, an Active Directory-like `sAMAccountName` attribute, and
  `allow bind_anon_dn`, so that, as on Active Directory, a bind with a DN and an empty
  password *succeeds* as anonymous: the tests can only pass if Kriten refuses those;
- a directory loaded offline with `slapadd`: `ou=people` (users with `{SSHA}`
  passwords), `ou=groups` (one group), `ou=services` (the search account, the only
  identity allowed to read entries);
- `slapd -d 0` as a child process listening on `ldap://127.0.0.1:P` (StartTLS) and
  `ldaps://127.0.0.1:Q`, and on `ldaps://127.0.0.2:Q`, an address the certificate
  does not name. It is stopped when the context exits, and dies with pytest even when
  pytest is killed (PR_SET_PDEATHSIG).

`make test-deps` installs slapd where it can. Without the binary, `running_slapd` fails
with that hint: the tests are never skipped.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SLAPD_PATHS = ("/usr/sbin/slapd", "/usr/local/sbin/slapd")
SLAPADD_PATHS = ("/usr/sbin/slapadd", "/usr/local/sbin/slapadd")
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>

BASE_DN = "dc=example,dc=org"
PEOPLE_DN = f"ou=people,{BASE_DN}"
SERVICE_DN = f"cn=kriten,ou=services,{BASE_DN}"
SERVICE_PASSWORD = "service-secret"
GROUP_DN = f"cn=kriten-users,ou=groups,{BASE_DN}"
# Real OIDs for the AD attribute; the auxiliary class sits in OpenLDAP's experimental arc.
AD_SCHEMA = """\
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.4203.666.11.1 NAME 'kritenTestAdAccount'
    SUP top AUXILIARY MAY sAMAccountName )
"""


@dataclass(frozen=True)
class DirectoryUser:
    account: str  # sAMAccountName
    uid: str
    password: str

    @property
    def dn(self) -> str:
        return f"uid={self.uid},{PEOPLE_DN}"


USERS = (
    DirectoryUser(account="alice", uid="alice", password="alice-password"),
    DirectoryUser(account="bob", uid="bob", password="bob-password"),
)


@dataclass
class LdapServer:
    """A running slapd and what a client needs to reach it."""

    directory: Path
    ldap_port: int
    ldaps_port: int
    ca_file: Path
    wrong_ca_file: Path
    process: subprocess.Popen[bytes]
    users: dict[str, DirectoryUser] = field(default_factory=dict)
    base_dn: str = BASE_DN
    service_dn: str = SERVICE_DN
    service_password: str = SERVICE_PASSWORD
    group_dn: str = GROUP_DN

    @property
    def starttls_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ldaps_url_unnamed_host(self) -> str:
        """The same server at an address its certificate does not name."""
        return f"ldaps://127.0.0.2:{self.ldaps_port}"


def find_binary(candidates: tuple[str, ...], name: str) -> str:
    for candidate in (shutil.which(name), *candidates):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        f"{name} is not installed: run `make test-deps` (as root on Debian, it installs "
        "slapd and ldap-utils), or `apt-get install slapd ldap-utils`"
    )


# --- certificates ---------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _make_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_certificates(directory: Path) -> tuple[Path, Path, Path, Path]:
    """(ca, wrong_ca, server certificate, server key) files in `directory`."""
    ca_key, ca = _make_ca("Kriten test LDAP CA")
    _other_key, other_ca = _make_ca("Kriten test unrelated CA")
    server_key, server = _make_server_certificate(ca_key, ca)
    paths = (
        directory / "ca.pem",
        directory / "wrong-ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    paths[0].write_bytes(_pem(ca))
    paths[1].write_bytes(_pem(other_ca))
    paths[2].write_bytes(_pem(server))
    paths[3].write_bytes(_key_pem(server_key))
    paths[3].chmod(0o600)
    return paths


# --- configuration and data -----------------------------------------------------------


def ssha(password: str) -> str:
    """An OpenLDAP `{SSHA}` hash: the server checks binds against it."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def slapd_conf(directory: Path, ca: Path, certificate: Path, key: Path) -> str:
    schema = "\n".join(
        f"include {SCHEMA_DIR / name}"
        for name in ("core.schema", "cosine.schema", "inetorgperson.schema")
    )
    return f"""\
{schema}
include {directory / "ad.schema"}
pidfile {directory / "slapd.pid"}
argsfile {directory / "slapd.args"}
modulepath {MODULE_DIR}
moduleload back_mdb
TLSCACertificateFile {ca}
TLSCertificateFile {certificate}
TLSCertificateKeyFile {key}
# Like Active Directory: a DN with an empty password binds, unauthenticated.
allow bind_anon_dn

database mdb
maxsize 16777216
suffix "{BASE_DN}"
rootdn "cn=admin,{BASE_DN}"
directory {directory / "data"}
access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by dn.exact="{SERVICE_DN}" read
    by * none
"""


def directory_ldif() -> str:
    entries = [
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\n"
        "dc: example\no: Example\n",
        f"dn: {PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{BASE_DN}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: ou=services,{BASE_DN}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {SERVICE_DN}\nobjectClass: person\ncn: kriten\nsn: kriten\n"
        f"userPassword: {ssha(SERVICE_PASSWORD)}\n",
    ]
    for user in USERS:
        entries.append(
            f"dn: {user.dn}\nobjectClass: inetOrgPerson\nobjectClass: kritenTestAdAccount\n"
            f"uid: {user.uid}\ncn: {user.account}\nsn: {user.account}\n"
            f"sAMAccountName: {user.account}\nuserPassword: {ssha(user.password)}\n"
        )
    members = "".join(f"member: {user.dn}\n" for user in USERS)
    entries.append(f"dn: {GROUP_DN}\nobjectClass: groupOfNames\ncn: kriten-users\n{members}")
    return "\n".join(entries)


# --- the process ----------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child: SIGTERM it when pytest dies, even killed, so no slapd is left."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def _start(slapd: str, conf: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    ldap_port, ldaps_port = free_port(), free_port()
    urls = (
        f"ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/ "
        f"ldaps://127.0.0.2:{ldaps_port}/"
    )
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [slapd, "-h", urls, "-f", str(conf), "-d", "0"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    deadline = time.monotonic() + START_TIMEOUT
    listeners = (("127.0.0.1", ldap_port), ("127.0.0.1", ldaps_port), ("127.0.0.2", ldaps_port))
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if all(_listening(host, port) for host, port in listeners):
            return process, ldap_port, ldaps_port
        time.sleep(0.05)
    _stop(process)
    raise RuntimeError(
        f"slapd did not start (exit {process.returncode}):\n"
        + log_path.read_text(errors="replace")[-2000:]
    )


@contextmanager
def running_slapd(directory: Path, attempts: int = 3) -> Iterator[LdapServer]:
    """A slapd serving the test directory from `directory`, stopped on exit."""
    slapd = find_binary(SLAPD_PATHS, "slapd")
    slapadd = find_binary(SLAPADD_PATHS, "slapadd")
    ca, wrong_ca, certificate, key = write_certificates(directory)
    (directory / "ad.schema").write_text(AD_SCHEMA)
    (directory / "data").mkdir()
    conf = directory / "slapd.conf"
    conf.write_text(slapd_conf(directory, ca, certificate, key))
    ldif = directory / "directory.ldif"
    ldif.write_text(directory_ldif())
    loaded = subprocess.run(
        [slapadd, "-f", str(conf), "-l", str(ldif)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if loaded.returncode != 0:
        raise RuntimeError(f"slapadd failed: {loaded.stderr}")
    log_path = directory / "slapd.log"
    for attempt in range(1, attempts + 1):
        try:
            process, ldap_port, ldaps_port = _start(slapd, conf, log_path)
            break
        except RuntimeError:
            # Another process may have taken a probed port before slapd bound it.
            if attempt == attempts:
                raise
    try:
        yield LdapServer(
            directory=directory,
            ldap_port=ldap_port,
            ldaps_port=ldaps_port,
            ca_file=ca,
            wrong_ca_file=wrong_ca,
            process=process,
            users={user.account: user for user in USERS},
        )
    finally:
        _stop(process)
