"""Size limits on what commands read whole (README, "Resource limits"): a too-large input gets
one line naming the file, the limit and the problem, exit status 2, before Spark starts and
before anything is written. No Spark: the Spark-side line limit of ``ctr import`` is checked in
``test_public_import.py``; the ingest's line limit here runs the ingest's own ``mapInArrow``
body on an Arrow batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from ctr.cli import main
from feature_store import ingest, parse, public
from monitoring import alerts
from monitoring import cli as monitoring_cli
from shared.errors import ConfigurationError, InputError
from shared.featurize import spec as spec_module
from shared.limits import MiB, read_bytes_limited, read_tail, read_text_limited
from shared.model import format as model_format
from training import search


def big_toml(path: Path, limit: int) -> Path:
    """A valid TOML file (comment lines) one byte over ``limit``."""
    line = "# " + "x" * 1021 + "\n"  # 1 KiB
    path.write_text(line * (limit // len(line)) + "#" * (limit % len(line) + 1))
    assert path.stat().st_size == limit + 1
    return path


def run(capsys, *argv: str) -> str:
    """``ctr argv`` in-process: asserts exit status 2 and one line on stderr; returns that line."""
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in captured.err, captured.err
    return lines[0]


# -- the helper ------------------------------------------------------------------------------

def test_helper_reads_at_most_limit_plus_one_byte(tmp_path):
    ok = tmp_path / "ok.txt"
    ok.write_bytes(b"a" * 100)
    assert read_bytes_limited(ok, 100, "thing") == b"a" * 100
    ok.write_bytes(b"a" * 101)
    with pytest.raises(InputError, match=r"thing .*ok.txt is 101 bytes, over the 100 bytes limit"):
        read_bytes_limited(ok, 100, "thing")
    # an endless input (a device, a FIFO) is refused after limit + 1 bytes, not read to its end
    with pytest.raises(ConfigurationError, match="more than 1 KiB, over the 1 KiB limit"):
        read_bytes_limited("/dev/zero", 1024, "spec", ConfigurationError)
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(InputError, match="is not UTF-8 text"):
        read_text_limited(tmp_path / "latin1.txt", 100, "spec")
    log = tmp_path / "spark.log"
    log.write_bytes(b"x" * 10_000 + b"the end")
    assert read_tail(log, 7) == "the end"


# -- config-like files read whole: spec, search space, alert rules, policy -------------------

def test_feature_spec_over_1_mib(tmp_path, capsys):
    assert spec_module.MAX_SPEC_BYTES == 1 * MiB
    path = big_toml(tmp_path / "spec.toml", spec_module.MAX_SPEC_BYTES)
    err = run(capsys, "--home", str(tmp_path / "home"), "train", "--start", "2026-01-01", "--spec", str(path))
    assert err.startswith("ctr train: error: feature spec ") and str(path) in err
    assert "over the 1 MiB limit" in err
    assert not (tmp_path / "home").exists()


def test_search_space_over_1_mib(tmp_path, capsys):
    assert search.MAX_SEARCH_SPACE_BYTES == 1 * MiB
    path = big_toml(tmp_path / "space.toml", search.MAX_SEARCH_SPACE_BYTES)
    err = run(capsys, "--home", str(tmp_path / "home"), "train", "--start", "2026-01-01",
              "--search-space", str(path))
    assert err.startswith("ctr train: error: ") and "search space" in err and "over the 1 MiB limit" in err
    # a missing file is a clear error too (it was a FileNotFoundError traceback)
    err = run(capsys, "--home", str(tmp_path / "home"), "train", "--start", "2026-01-01",
              "--search-space", str(tmp_path / "nope.toml"))
    assert "search space file" in err and "does not exist" in err


def test_alert_rules_over_1_mib(tmp_path, capsys):
    assert alerts.MAX_RULES_BYTES == 1 * MiB
    path = big_toml(tmp_path / "rules.toml", alerts.MAX_RULES_BYTES)
    err = run(capsys, "--home", str(tmp_path / "home"), "monitor", "--date", "2026-01-01", "--rules", str(path))
    assert err.startswith("ctr monitor: error: alert rules file ") and "over the 1 MiB limit" in err


def test_scheduler_policy_over_1_mib(tmp_path, capsys):
    assert monitoring_cli.MAX_POLICY_BYTES == 1 * MiB
    path = big_toml(tmp_path / "policy.toml", monitoring_cli.MAX_POLICY_BYTES)
    err = run(capsys, "--home", str(tmp_path / "home"), "schedule", "--policy", str(path))
    assert err.startswith("ctr schedule: error: policy file ") and "over the 1 MiB limit" in err


# -- logs: one hourly file, one line -----------------------------------------------------------

def test_ingest_refuses_a_log_file_over_the_limit(tmp_path, capsys, monkeypatch):
    assert ingest.MAX_LOG_FILE_BYTES == 256 * MiB
    monkeypatch.setattr(ingest, "MAX_LOG_FILE_BYTES", 1024)  # a 256 MiB file has no place in a test
    folder = tmp_path / "raw" / "impressions" / "date=2026-01-05"
    folder.mkdir(parents=True)
    (folder / "hour=00.jsonl").write_text("{}\n" * 10)
    (folder / "hour=01.jsonl").write_text("{}\n" * 400)  # 1,200 bytes
    err = run(capsys, "--home", str(tmp_path / "home"), "ingest", "--date", "2026-01-05",
              "--raw", str(tmp_path / "raw"))
    assert err.startswith("ctr ingest: error: log file ") and "hour=01.jsonl is 1.2 KiB (1,200 bytes)" in err
    assert "over the 1 KiB limit; split it into several hour=*.jsonl files" in err
    assert not (tmp_path / "home" / "warehouse").exists()


def test_a_log_line_over_the_limit_is_quarantined_unparsed():
    assert parse.MAX_LINE_BYTES == 1 * MiB and "line_too_long" in parse.REASONS
    long_line = '{"impression_id": "' + "x" * parse.MAX_LINE_BYTES + '"}'
    with pytest.raises(parse.LineError, match="over the 1 MiB limit") as info:
        parse.parse_click(long_line.encode())
    assert info.value.reason == "line_too_long"
    wide = '{"impression_id": "' + "é" * (parse.MAX_LINE_BYTES // 2) + '"}'  # fewer characters than bytes
    with pytest.raises(parse.LineError) as info:
        parse.parse_click(wide)
    assert info.value.reason == "line_too_long"
    # the ingest's own mapInArrow body: the long line becomes a quarantine row, its neighbours parse
    ok = '{"impression_id": "i1", "click_time": "2026-01-05T10:00:00Z"}'
    batch = pa.RecordBatch.from_pydict({"source_file": ["f"], "value": ["\n".join([ok, long_line, ok])]})
    out = pa.Table.from_batches(list(ingest._parse_click_files(iter([batch])))).to_pylist()
    assert [(r["line_number"], r["ok"], r["reason"]) for r in out] == [
        (1, True, None), (2, False, "line_too_long"), (3, True, None)]
    assert len(out[1]["raw"]) == parse.RAW_LINE_LIMIT


def test_import_refuses_a_first_line_over_64_kib_before_spark_starts(tmp_path, capsys):
    assert public.MAX_IMPORT_LINE_BYTES == 64 * 1024
    path = tmp_path / "train.txt"
    path.write_text("0\t" + "1" * public.MAX_IMPORT_LINE_BYTES + "\n")
    err = run(capsys, "--home", str(tmp_path / "home"), "import", "criteo", str(path))
    assert err.startswith("ctr import: error: ") and "line 1 is longer than the 64 KiB line limit" in err
    assert "not a criteo text file" in err
    assert not (tmp_path / "home" / "warehouse").exists()


# -- a model directory's JSON ----------------------------------------------------------------

def test_serving_a_model_dir_with_an_oversized_json_file(tmp_path):
    assert model_format.MAX_MODEL_JSON_BYTES == 64 * MiB
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    with open(model_dir / model_format.CHECKSUMS_FILE, "wb") as f:  # sparse: no 64 MiB written
        f.truncate(model_format.MAX_MODEL_JSON_BYTES + 1)
    with pytest.raises(model_format.ModelDirError, match="checksums.json is 64.0 MiB .* over the 64 MiB limit"):
        model_format.verify_model_dir(model_dir)
    # through the real command: refused before the server binds, one line
    exe = Path(sys.executable).with_name("ctr")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ctr.cli"]
    env = {**os.environ, "CTR_HOME": str(tmp_path / "home")}
    proc = subprocess.run(cmd + ["serve", "--port", "0", "--no-prediction-log", "--model-dir", str(model_dir)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and last.startswith("ctr serve: error: ")
    assert "over the 64 MiB limit" in last
