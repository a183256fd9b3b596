"""Reading the shared auth key from a file (``--auth-key-file`` / ``auth_key_file``).

A key on the command line is visible to every user of the machine (``ps``); a key file is
not, as long as only its owner can read it. So a file that group or other users may read
or write (``mode & 0o077``) is refused, as ``ssh`` refuses a private key others can read.
One trailing newline (``\\n`` or ``\\r\\n``) is stripped, so ``echo KEY > file`` works;
nothing else is.
"""

import os
import stat
from typing import Optional

__all__ = ["read_key_file", "resolve_auth_key"]

MAX_KEY_FILE_BYTES = 64 * 1024


def read_key_file(path: str) -> str:
    """The key in ``path``; ValueError with a one-line message if it cannot be used."""
    if not isinstance(path, str) or not path:
        raise ValueError("expected the path of a key file, got %r" % (path,))
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())  # the file opened, not whatever the path names a moment later
            if not stat.S_ISREG(info.st_mode):
                raise ValueError("key file %r is not a regular file" % path)
            if os.name == "posix" and info.st_mode & 0o077:
                raise ValueError("key file %r can be read or written by other users (mode %04o): make it private "
                                 "with 'chmod 600 %s'" % (path, stat.S_IMODE(info.st_mode), path))
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError("cannot read key file %r: %s" % (path, exc.strerror or exc)) from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ValueError("key file %r is larger than %d bytes: is it the right file?" % (path, MAX_KEY_FILE_BYTES))
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise ValueError("key file %r is empty" % path)
    if b"\0" in data:
        raise ValueError("key file %r contains a NUL byte: write the key as text" % path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("key file %r is not UTF-8 text: write the key as text (e.g. 'openssl rand -hex 32')"
                         % path) from None


def resolve_auth_key(auth_key: Optional[object], auth_key_file: Optional[str]) -> Optional[object]:
    """The key of a Python API call: ``auth_key`` if given, else the key file's, else ``SCALER_AUTH_KEY``."""
    if auth_key is not None and auth_key != "" and auth_key != b"":
        return auth_key
    if auth_key_file:
        return read_key_file(auth_key_file)
    return os.environ.get("SCALER_AUTH_KEY") or None
