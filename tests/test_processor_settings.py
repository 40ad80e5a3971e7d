"""processor.late_charge_window_s, and the name it had before (reversal_window_s), still read."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_config import _clean_env as _clean_env  # autouse: no FLOWPAY_* from outside
from workers.core.config import load_settings
from workers.core.errors import ConfigError


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "flowpay.toml"
    path.write_text(f"[processor]\n{body}\n")
    return path


def test_the_window_is_a_day_by_default() -> None:
    assert load_settings().processor.late_charge_window_s == 86_400


def test_the_window_is_set_by_its_name_in_the_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path, "late_charge_window_s = 600")
    assert load_settings(path).processor.late_charge_window_s == 600
    monkeypatch.setenv("FLOWPAY_PROCESSOR__LATE_CHARGE_WINDOW_S", "900")
    assert load_settings(path).processor.late_charge_window_s == 900


def test_the_old_name_is_still_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A configuration written before the rename keeps its meaning.
    assert load_settings(_config(tmp_path, "reversal_window_s = 600")).processor == (
        load_settings(_config(tmp_path, "late_charge_window_s = 600")).processor
    )
    (tmp_path / "flowpay.toml").unlink()
    monkeypatch.setenv("FLOWPAY_PROCESSOR__REVERSAL_WINDOW_S", "120")
    assert load_settings().processor.late_charge_window_s == 120


def test_both_names_at_once_is_an_error_naming_them(tmp_path: Path) -> None:
    path = _config(tmp_path, "late_charge_window_s = 600\nreversal_window_s = 60")
    with pytest.raises(ConfigError, match=r"reversal_window_s.*late_charge_window_s"):
        load_settings(path)


def test_the_window_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"processor\.late_charge_window_s"):
        load_settings(_config(tmp_path, "late_charge_window_s = 0"))
