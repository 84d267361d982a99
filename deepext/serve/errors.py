"""How errors leave the API: one JSON shape, the right status, the request id, never a trace.

    {"error": {"code": "not_found", "message": "...", "field": null, "request_id": "..."}}

Validation errors (422) also list every bad field by its path (`body.config.sampling.group_size`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from deepext.errors import (
    BadGateway,
    Conflict,
    DeepextError,
    Forbidden,
    GatewayTimeout,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("deepext.api")

STATUS = {
    Unauthenticated: (401, "unauthenticated"),
    Forbidden: (403, "forbidden"),
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    PayloadTooLarge: (413, "payload_too_large"),
    InvalidInput: (422, "invalid"),
    RateLimited: (429, "rate_limited"),
    Unavailable: (503, "unavailable"),
    BadGateway: (502, "bad_gateway"),
    GatewayTimeout: (504, "gateway_timeout"),
}


class FieldError(BaseModel):
    path: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None
    fields: list[FieldError] = []
    request_id: str


class ErrorResponse(BaseModel):
    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": code.replace("_", " ")} for status, code in STATUS.values()
}


def _request_id(request: Request) -> str:
    info = request.scope.get("deepext")
    return info.request_id if info is not None else ""


def _body(request: Request, status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = ErrorBody(code=code, message=message, request_id=_request_id(request), **extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": body.model_dump()}, status_code=status, headers=headers)


def status_of(exc: DeepextError) -> tuple[int, str]:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400, "bad_request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DeepextError)
    async def _domain(request: Request, exc: DeepextError) -> JSONResponse:
        status, code = status_of(exc)
        response = _body(request, status, code, str(exc), field=getattr(exc, "field", None))
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            FieldError(path=".".join(str(part) for part in error["loc"]), message=error["msg"])
            for error in exc.errors()
        ]
        message = "; ".join(f"{f.path}: {f.message}" for f in fields) or "invalid request"
        return _body(request, 422, "invalid", message, field=fields[0].path if fields else None, fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _body(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> JSONResponse:
        # Input that passed validation but that the database refuses to store, such as a NUL
        # character in a PostgreSQL text column; the transaction was rolled back.
        log.info("request %s: database refused a value: %s", _request_id(request), exc.orig)
        return _body(request, 422, "invalid", "a value cannot be stored (text may not contain NUL characters)")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s failed", _request_id(request), exc_info=exc)
        return _body(request, 500, "internal", "internal error; quote the request id to an administrator")
