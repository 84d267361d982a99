"""Password hashing with argon2id (memory-hard; argon2-cffi's RFC 9106 low-memory profile)."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from deepext.errors import InvalidInput

MIN_LENGTH = 12


@functools.cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"password: use at least {MIN_LENGTH} characters", field="password")
    if len(set(password)) < 4:
        raise InvalidInput("password: too repetitive", field="password")


def hash_password(password: str) -> str:
    check_strength(password)
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if `password` matches; a missing or malformed hash never matches."""
    if not password_hash:
        # Spend the same time as a real check, so a missing account cannot be told by timing.
        _hasher().hash(password or "-")
        return False
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def upgraded_hash(password_hash: str | None, password: str) -> str | None:
    """A new hash when the stored one used weaker parameters than today's (after a good login)."""
    if password_hash and _hasher().check_needs_rehash(password_hash):
        return _hasher().hash(password)
    return None
