"""Service settings: the only module that reads the process environment.

Variables (all optional):

=========================  ==========================================================================
``MEASURES_DATA``          lake root (folder or ``s3://bucket/prefix``) for ``GET /Patient/{id}/...``
``MEASURES_VALUESETS``     official ValueSet expansions (file or folder) overlaid on the project's sets
``MEASURES_MEASURES``      comma-separated measure ids to serve (default: the whole library)
``MEASURES_API_KEY``       when set, data routes need ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``
``MEASURES_MAX_BODY_BYTES``  request body limit in bytes (default 5 MiB); larger bodies get 413
``MEASURES_VALIDATE_LAKE``   check the Parquet footers of a patient's bucket before reading it (default true)
``MEASURES_LOG_LEVEL``     logging level of the ``handlers.api`` loggers (default INFO)
``RESULTS_ROOT``           batch results root (shared with the batch handlers; unused by the API itself)
=========================  ==========================================================================

``pydantic-settings`` parses the process environment when it is installed; otherwise (and for an explicit
``environ`` mapping) the variables are read by hand with the same names and defaults. Either way
:func:`load_settings` is the entry point and keyword overrides (the ``measures serve`` flags, tests) win
over the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
ENV_PREFIX = "MEASURES_"
_UNPREFIXED = {"results_root": "RESULTS_ROOT"}


@dataclass(frozen=True)
class Settings:
    """What the API depends on besides code; build with :func:`load_settings` or directly in tests."""

    data: str | None = None
    valuesets: str | None = None
    measures: str | None = None
    api_key: str | None = field(default=None, repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    validate_lake: bool = True
    log_level: str = "INFO"
    results_root: str | None = None

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError("MEASURES_MAX_BODY_BYTES must be a positive number of bytes")
        for name in ("data", "valuesets", "measures", "api_key", "results_root"):
            value = getattr(self, name)
            if isinstance(value, str) and not value.strip():
                object.__setattr__(self, name, None)  # an empty variable means "not set"

    @property
    def measure_ids(self) -> list[str] | None:
        """The configured measure ids, or None for the whole library."""
        if not self.measures:
            return None
        ids = [m.strip() for m in self.measures.split(",") if m.strip()]
        return ids or None

    @property
    def auth_required(self) -> bool:
        return bool(self.api_key)


def _env_name(name: str) -> str:
    return _UNPREFIXED.get(name, ENV_PREFIX + name.upper())


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """The dataclass fallback: read, convert and validate each variable by hand."""
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = environ.get(_env_name(f.name))
        if raw is None:
            continue
        try:
            if f.name == "max_body_bytes":
                values[f.name] = int(raw)
            elif f.name == "validate_lake":
                values[f.name] = _parse_bool(raw)
            else:
                values[f.name] = raw
        except ValueError as exc:
            raise ValueError(f"{_env_name(f.name)}: {exc}") from None
    return values


def _from_pydantic() -> dict[str, Any] | None:
    """pydantic-settings parsing of the process environment, or None when it is not installed."""
    try:
        from pydantic import AliasChoices, Field
        from pydantic_settings import BaseSettings, SettingsConfigDict
    except ImportError:  # pragma: no cover - the fallback is exercised through load_settings(environ=...)
        return None

    class _Env(BaseSettings):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", case_sensitive=False)

        data: str | None = None
        valuesets: str | None = None
        measures: str | None = None
        api_key: str | None = Field(default=None, repr=False)
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
        validate_lake: bool = True
        log_level: str = "INFO"
        results_root: str | None = Field(
            default=None, validation_alias=AliasChoices("RESULTS_ROOT", "MEASURES_RESULTS_ROOT")
        )

    return _Env().model_dump(exclude_unset=True)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment (or ``environ``), then ``overrides`` whose value is not None."""
    values = _from_pydantic() if environ is None else None
    if values is None:
        values = _from_environ(os.environ if environ is None else environ)
    settings = Settings(**values)
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(settings, **given) if given else settings
