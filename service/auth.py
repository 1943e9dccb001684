"""API keys: generated once, shown once, stored as sha256 hashes.

Keys are 256-bit random tokens, so a plain sha256 (no slow KDF) is enough: there is
nothing to brute-force from the hash.
"""
from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.models import ApiKey
from service.db.types import utcnow

KEY_PREFIX = "ks_"

# Revocations made by this process. Caches of key checks (the inference runtime's)
# compare it with the count they last saw and forget everything when it moved, so a
# revocation here takes effect at the next request; other processes see it when their
# cached answers expire (KANSERVE_MODEL_LOOKUP_TTL_S).
_revocations = 0


def revocations() -> int:
    return _revocations


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _display_prefix(key: str) -> str:
    return key[:10]


def create_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """Returns the stored row and the plaintext key (the only time it exists)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, prefix=_display_prefix(key), key_hash=hash_key(key))
    session.add(row)
    session.commit()
    return row, key


def ensure_keys(session: Session, keys: list[str], name: str = "bootstrap") -> None:
    """Registers configured keys (KANSERVE_API_KEYS) so that jobs can reference their row."""
    for key in keys:
        digest = hash_key(key)
        if session.scalar(sa.select(ApiKey.id).where(ApiKey.key_hash == digest)) is None:
            session.add(ApiKey(name=name, prefix=_display_prefix(key), key_hash=digest))
            try:
                session.commit()
            except sa.exc.IntegrityError:  # another process registered it first
                session.rollback()


def find_active_key(session: Session, key: str) -> ApiKey | None:
    row = session.scalar(sa.select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        return None
    return row


def revoke_key(session: Session, id_or_prefix: str) -> list[ApiKey]:
    """Revokes the key with this id, or every key whose shown prefix matches exactly."""
    rows = session.scalars(
        sa.select(ApiKey).where(sa.or_(ApiKey.id == id_or_prefix, ApiKey.prefix == id_or_prefix))
    ).all()
    global _revocations
    for row in rows:
        if row.revoked_at is None:
            row.revoked_at = utcnow()
    session.commit()
    _revocations += 1
    return list(rows)


def has_any_key(session: Session) -> bool:
    return session.scalar(sa.select(sa.func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) > 0
