"""Provider API keys encrypted at rest (Fernet: AES-128-CBC with an HMAC-SHA256, from `cryptography`).

The key comes from the `secret_key` setting (`DEEPEXT_SECRET_KEY`): one or more Fernet keys,
comma-separated; the first encrypts, every one decrypts, so a key is rotated by putting the new one
first and running `deepext providers rotate-keys` (`rotate_provider_keys`), after which the old one
can be dropped. Unset, the platform creates `<home>/secret.key` once (mode 0600) and uses it.
Every process that serves the API must see the same key: on a cluster whose API replicas run on
several nodes, set `DEEPEXT_SECRET_KEY` (or share the home folder).

Make a key: `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from deepext.config import Settings
from deepext.errors import Unavailable

log = logging.getLogger("deepext.secrets")
KEY_FILE = "secret.key"


class SecretBox:
    """Encrypts and decrypts short secrets (API keys) with the platform's key(s)."""

    def __init__(self, keys: list[bytes], *, source: str = "secret_key") -> None:
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as exc:  # the platform's configuration, not the caller's input, is wrong
            raise Unavailable(
                f"provider credentials cannot be used: {source} is not a Fernet key ({exc}); an administrator "
                "can make one with Fernet.generate_key()"
            ) from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box for the keys in `settings` (read once per process and key)."""
        secret = settings.secret_key.get_secret_value() if settings.secret_key is not None else ""
        return _box(secret, settings.home)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str, *, what: str) -> str:
        """The secret `token` holds; `what` names it in the error if the key in force cannot open it."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken as exc:
            raise Unavailable(
                f"{what} cannot be decrypted with the platform's secret key (was DEEPEXT_SECRET_KEY or "
                f"<home>/{KEY_FILE} changed?); set the key again with PATCH"
            ) from exc

    def rotate(self, token: str, *, what: str) -> str:
        """`token` encrypted again with the first key (`MultiFernet.rotate`: any configured key may
        open it, its original timestamp is kept); `Unavailable` naming `what` if none can."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise Unavailable(
                f"{what} cannot be decrypted with any configured secret key; add the key it was encrypted with "
                "to DEEPEXT_SECRET_KEY (after the new one), or set that API key again with PATCH"
            ) from exc


@functools.lru_cache(maxsize=8)
def _box(secret: str, home: Path) -> SecretBox:
    keys = [part.strip().encode() for part in secret.split(",") if part.strip()]
    if keys:
        return SecretBox(keys, source="DEEPEXT_SECRET_KEY")
    return SecretBox([key_file(home)], source=str(home / KEY_FILE))


def key_file(home: Path) -> bytes:
    """The key in `<home>/secret.key`, created once (mode 0600) if missing. It is written to a temporary
    file and hard-linked into place, so concurrent starters agree on one key and none reads half a file."""
    path = home / KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        temporary = home / f".{KEY_FILE}.{uuid.uuid4().hex}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(Fernet.generate_key() + b"\n")
        try:
            os.link(temporary, path)
            log.info("created the provider-credential key %s", path)
        except FileExistsError:
            pass  # another process was first; use its key
        finally:
            temporary.unlink()
    elif path.stat().st_mode & 0o077:
        log.warning("%s can be read by other users; chmod 600 it", path)
    return path.read_bytes().strip()
