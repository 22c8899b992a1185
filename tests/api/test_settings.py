"""Settings: environment names, defaults, overrides."""

from __future__ import annotations

import pytest

from handlers.settings import DEFAULT_MAX_BODY_BYTES, load_settings


def test_defaults_from_an_empty_environment() -> None:
    s = load_settings({})
    assert s.data is None and s.api_key is None and s.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert s.measure_ids is None and not s.auth_required


def test_names_and_parsing() -> None:
    s = load_settings(
        {
            "MEASURES_DATA": "s3://lake/data",
            "MEASURES_VALUESETS": "/vs",
            "MEASURES_API_KEY": "zz-key-9",
            "MEASURES_MAX_BODY_BYTES": "1024",
            "MEASURES_MEASURES": "cms125, CMS122,",
            "RESULTS_ROOT": "/r",
            "MEASURES_VALIDATE_LAKE": "no",
        }
    )
    assert (s.data, s.valuesets, s.max_body_bytes, s.results_root) == ("s3://lake/data", "/vs", 1024, "/r")
    assert s.measure_ids == ["cms125", "CMS122"] and s.auth_required and not s.validate_lake
    assert "zz-key-9" not in repr(s)  # the key is never printed


def test_process_environment_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEASURES_DATA", "/from-env")
    monkeypatch.setenv("MEASURES_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("RESULTS_ROOT", "/results")
    s = load_settings()
    assert s.data == "/from-env" and s.max_body_bytes == 2048 and s.results_root == "/results"
    assert load_settings(data="/flag", valuesets=None).data == "/flag"


def test_bad_values() -> None:
    with pytest.raises(ValueError):
        load_settings({"MEASURES_MAX_BODY_BYTES": "lots"})
    with pytest.raises(ValueError):
        load_settings({"MEASURES_MAX_BODY_BYTES": "0"})
