"""Dependencies shared by the routers: settings, a database session, the caller's key."""
from __future__ import annotations

from collections.abc import Iterator

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.auth import find_active_key
from service.config import Settings
from service.db.models import ApiKey

bearer_scheme = HTTPBearer(auto_error=False, description="An API key made with `kanserve keys create`.")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def current_key(
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    db: Session = Depends(get_db),
) -> ApiKey:
    """The caller's API key row; 401 when the header is missing, malformed, unknown or revoked."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'", headers=challenge)
    key = find_active_key(db, credentials.credentials)
    if key is None:
        raise HTTPException(401, "invalid or revoked API key", headers=challenge)
    return key
