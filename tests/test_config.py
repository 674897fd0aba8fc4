import subprocess
import sys
from pathlib import Path

import pytest

from ctr.cli import build_parser, main, settings_from_args
from shared.config import load_settings


def test_defaults_are_under_the_working_directory(tmp_path):
    s = load_settings(env={}, cwd=tmp_path)
    assert s.home == (tmp_path / "ctr_home").resolve()
    assert s.spark_master == "local[*]"
    assert s.host == "127.0.0.1"
    assert s.mlflow_tracking_uri == f"sqlite:///{s.home / 'mlflow' / 'mlflow.db'}"
    assert s.mlflow_artifact_root.startswith("file://") and s.mlflow_artifact_root.endswith("/mlflow/artifacts")


def test_env_overrides_default_and_flag_overrides_env(tmp_path):
    env = {"CTR_HOME": str(tmp_path / "envhome"), "CTR_PORT": "9000", "CTR_SPARK_MASTER": "local[1]"}
    s = load_settings(env=env)
    assert s.home == (tmp_path / "envhome").resolve() and s.port == 9000 and s.spark_master == "local[1]"
    s = load_settings({"port": 9100, "home": str(tmp_path / "flaghome"), "spark_master": None}, env=env)
    assert s.port == 9100
    assert s.home == (tmp_path / "flaghome").resolve()
    assert s.spark_master == "local[1]"  # a flag left unset (None) does not override env


def test_mlflow_uri_env_and_flag(tmp_path):
    s = load_settings(env={"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"})
    assert s.mlflow_tracking_uri == "http://mlflow.internal:5000"
    args = build_parser().parse_args(["--mlflow-uri", "sqlite:////tmp/x.db", "config"])
    assert settings_from_args(args).mlflow_tracking_uri == "sqlite:////tmp/x.db"


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="'port' must be an integer"):
        load_settings(env={"CTR_PORT": "eighty"})
    with pytest.raises(ValueError, match="unknown setting 'colour'"):
        load_settings({"colour": "red"}, env={})


def test_ctr_config_prints_effective_values(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CTR_HOME", str(tmp_path / "h"))
    assert main(["--port", "8181", "config"]) == 0
    out = capsys.readouterr().out
    assert "8181" in out and str((tmp_path / "h").resolve()) in out


def test_ctr_help_lists_subcommands():
    exe = Path(sys.executable).parent / "ctr"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("config", "demo"):
        assert name in out


def test_bad_env_value_is_one_line_error_not_a_traceback(tmp_path):
    exe = Path(sys.executable).parent / "ctr"
    proc = subprocess.run([str(exe), "config"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "CTR_PORT": "x"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "'port' must be an integer" in proc.stderr
