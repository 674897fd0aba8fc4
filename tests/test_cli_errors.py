"""The ``ctr`` command's error policy and option placement (no Spark is started).

Declared errors (:mod:`shared.errors`) are one line on stderr with exit status 2; any
other exception is a bug and keeps its traceback. The settings flags are accepted
before and after the subcommand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctr import commands as ctr_commands
from ctr.cli import build_parser, main, settings_from_args
from shared.errors import CommandError
from shared.errors import ArtifactError, ConfigurationError, CtrError, InputError, MissingInputError
from shared.featurize import FeaturizeError, SpecError
from shared.model.format import ModelDirError


def ctr(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """Run the installed ``ctr`` script (``python -m ctr.cli`` without one) with a fresh data root."""
    exe = Path(sys.executable).with_name("ctr")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ctr.cli"]
    env = {**os.environ, "CTR_HOME": str(tmp_path / "home")}
    return subprocess.run(cmd + list(argv), env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], proc.stderr
    for word in words:
        assert word in lines[0]


def test_bad_spec_name_is_one_line(tmp_path):
    proc = ctr(tmp_path, "train", "--start", "2014-01-01", "--spec", "nosuch")
    assert_one_line_error(proc, "ctr train", "nosuch")


def test_reversed_window_is_one_line(tmp_path):
    proc = ctr(tmp_path, "read", "--start", "2026-01-02", "--end", "2026-01-01")
    assert_one_line_error(proc, "ctr read", "must be after its start")


def test_home_that_is_a_file_is_one_line(tmp_path):
    not_a_dir = (tmp_path / "file").resolve()
    not_a_dir.write_text("x")
    proc = ctr(tmp_path, "config", "--home", str(not_a_dir))
    assert_one_line_error(proc, "not a directory", str(not_a_dir))


def test_serve_help_shows_host_and_port(tmp_path):
    proc = ctr(tmp_path, "serve", "--port", "9", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--host" in proc.stdout and "--port" in proc.stdout


@pytest.mark.parametrize("argv, expected", [
    (["serve", "--port", "9000", "--host", "0.0.0.0"], {"port": 9000, "host": "0.0.0.0"}),
    (["--port", "9000", "serve"], {"port": 9000}),
    (["--port", "8000", "serve", "--port", "9000"], {"port": 9000}),  # after the subcommand wins
    (["--home", "/tmp/before", "serve"], {"home": Path("/tmp/before")}),
    (["serve", "--home", "/tmp/after", "--mlflow-uri", "sqlite:////tmp/m.db", "--spark-master", "local[1]"],
     {"home": Path("/tmp/after"), "mlflow_tracking_uri": "sqlite:////tmp/m.db", "spark_master": "local[1]"}),
    (["models", "list", "--home", "/tmp/nested"], {"home": Path("/tmp/nested")}),
])
def test_settings_flags_before_and_after_the_subcommand(argv, expected):
    settings = settings_from_args(build_parser().parse_args(argv))
    assert {key: getattr(settings, key) for key in expected} == expected


def test_dashboard_sees_a_port_given_after_it():
    assert build_parser().parse_args(["dashboard", "--port", "9100"]).port == 9100
    assert build_parser().parse_args(["dashboard"]).port is None


@pytest.mark.parametrize("error", [KeyError("oops"), RuntimeError("bug"), ValueError("undeclared"),
                                   FileNotFoundError("/no/such")])
def test_a_programming_error_keeps_its_traceback(monkeypatch, error):
    def broken(args, settings):
        raise error

    monkeypatch.setattr(ctr_commands, "run_config", broken)
    with pytest.raises(type(error)):
        main(["config"])


@pytest.mark.parametrize("error", [InputError("bad record"), ConfigurationError("bad flag"),
                                   ArtifactError("bad model"), MissingInputError("no table"),
                                   CommandError("bad combination")])
def test_a_declared_error_is_one_line(monkeypatch, capsys, error):
    def failing(args, settings):
        raise error

    monkeypatch.setattr(ctr_commands, "run_config", failing)
    assert main(["config"]) == 2
    assert capsys.readouterr().err == f"ctr config: error: {error}\n"


@pytest.mark.parametrize("cls, family", [
    (FeaturizeError, InputError), (SpecError, ConfigurationError), (ModelDirError, ArtifactError),
    (CommandError, ConfigurationError), (MissingInputError, FileNotFoundError),
])
def test_families_keep_value_error(cls, family):
    assert issubclass(cls, family) and issubclass(cls, CtrError) and issubclass(cls, ValueError)
