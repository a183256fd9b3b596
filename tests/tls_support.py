"""Certificates for the TLS tests, made at test time with the ``openssl`` command (nothing checked in).

``make_pki(directory)`` writes a private CA, a server certificate it signed for ``localhost``
and ``127.0.0.1``, another one for a name no test connects to (hostname mismatch), and a
second, unrelated CA. Tests that need them skip, saying why, when ``openssl`` is missing.
"""

import os
import shutil
import subprocess
from typing import NamedTuple

import pytest

OPENSSL = shutil.which("openssl")
NEEDS_OPENSSL = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is needed to make test certificates")

_CA_EXTENSIONS = ("basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign",
                  "subjectKeyIdentifier=hash")
_LEAF_EXTENSIONS = """\
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=%s
"""


class PKI(NamedTuple):
    ca: str            # the CA certificate that signed cert (give it as tls_ca / SSL_CERT_FILE)
    cert: str          # server certificate for localhost and 127.0.0.1
    key: str           # its private key
    wrong_name_cert: str  # signed by the same CA, for other.invalid only
    wrong_name_key: str
    other_ca: str      # a CA that signed nothing here


def _run(*args: str, cwd: str) -> None:
    result = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError("openssl %s failed:\n%s" % (" ".join(args), result.stderr))


def _ca(directory: str, name: str) -> None:
    args = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".pem", "-days", "3", "-subj", "/CN=scaler test %s" % name]
    for extension in _CA_EXTENSIONS:
        args += ["-addext", extension]
    _run(*args, cwd=directory)


def _leaf(directory: str, name: str, ca: str, alt_names: str) -> None:
    _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", name + ".key",
         "-out", name + ".csr", "-subj", "/CN=%s" % name, cwd=directory)
    with open(os.path.join(directory, name + ".ext"), "w") as f:
        f.write(_LEAF_EXTENSIONS % alt_names)
    _run("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key", "-CAcreateserial",
         "-out", name + ".pem", "-days", "3", "-extfile", name + ".ext", cwd=directory)


def make_pki(directory: str) -> PKI:
    directory = str(directory)
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _leaf(directory, "server", "ca", "DNS:localhost,IP:127.0.0.1,IP:::1")
    _leaf(directory, "wrong-name", "ca", "DNS:other.invalid")
    for name in os.listdir(directory):
        if name.endswith(".key"):
            os.chmod(os.path.join(directory, name), 0o600)
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    return PKI(path("ca.pem"), path("server.pem"), path("server.key"), path("wrong-name.pem"),
               path("wrong-name.key"), path("other-ca.pem"))
