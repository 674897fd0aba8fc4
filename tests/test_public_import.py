"""``ctr import criteo|avazu`` on real Spark and real Delta tables: hand-written files with
every bad-row kind (exact counts, line numbers, idempotent re-import), then the real
public samples (counts conserved, line numbers across many file splits, and the rows
the shipped feature specs featurize exactly as they featurize the raw file)."""

from __future__ import annotations

import contextlib
import csv
from dataclasses import replace
from datetime import date, datetime

import pytest

from feature_store import tables
from feature_store.public import (
    AVAZU_COLUMNS, CRITEO_COLUMNS, LayoutError, detect_layout, import_file,
)
from ctr.cli import main
from conftest import shared_data

pytestmark = pytest.mark.spark


@contextlib.contextmanager
def split_size(spark, nbytes: int):
    """Force Spark to cut each file into splits of ``nbytes`` (so line numbering spans splits)."""
    key = "spark.sql.files.maxPartitionBytes"
    old = spark.conf.get(key)
    spark.conf.set(key, str(nbytes))
    try:
        yield
    finally:
        spark.conf.set(key, old)


def table(spark, settings, name, version=None):
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(settings.table_path(name))


def rows_of(df, key):
    return sorted((r.asDict() for r in df.collect()), key=lambda r: r[key])


# --- layout detection (no Spark) ----------------------------------------------------------

def test_layout_is_read_from_line_one():
    kaggle = detect_layout("criteo", "\ufeffId,Label," + ",".join(c.upper() for c in CRITEO_COLUMNS[1:]))
    assert (kaggle.delimiter, kaggle.header, kaggle.index("label"), kaggle.index("c26")) == (",", True, 1, 40)
    raw = detect_layout("criteo", "\t".join(["0"] + [""] * 39))
    assert (raw.delimiter, raw.header, raw.columns) == ("\t", False, CRITEO_COLUMNS)
    assert detect_layout("avazu", ",".join(AVAZU_COLUMNS)).index("hour") == 2
    test_file_header = ",".join(c for c in AVAZU_COLUMNS if c != "click")
    with pytest.raises(LayoutError, match=r"missing column\(s\) click \(the avazu test file has no labels"):
        detect_layout("avazu", test_file_header)
    with pytest.raises(LayoutError, match="line 1 has 39 tab-separated fields.*test.txt has no labels"):
        detect_layout("criteo", "\t".join([""] * 39))
    with pytest.raises(LayoutError, match="unknown column.s. extra"):
        detect_layout("criteo", "Label," + ",".join(CRITEO_COLUMNS[1:]) + ",extra")
    with pytest.raises(LayoutError, match="empty"):
        detect_layout("criteo", None)


# --- Criteo, canonical tab-separated layout ---------------------------------------------

def criteo_line(label="0", ints=None, cats=None):
    ints = ints or {}
    cats = cats or {}
    fields = [label] + [ints.get(f"i{k}", str(k)) for k in range(1, 14)] + \
        [cats.get(f"c{k}", f"{k:08x}") for k in range(1, 27)]
    return "\t".join(fields)


CRITEO_LINES = [
    criteo_line("1", {"i1": "", "i2": "-1"}, {"c26": "", "c25": ""}),  # 0 ok: missing values, trailing tabs
    criteo_line("0", {"i3": "123456789012"}),                           # 1 ok
    "\t".join(criteo_line().split("\t")[:39]),                          # 2 wrong_column_count
    criteo_line("2"),                                                   # 3 bad_label
    criteo_line("0", {"i5": "3.5"}),                                    # 4 bad_integer i5
    "",                                                                 # 5 blank_line
    criteo_line("0"),                                                   # 6 ok
    criteo_line("1", {"i13": "99999999999999999999"}),                  # 7 bad_integer i13 (overflow)
    criteo_line("1", {"i9": "+7"}) + "\r",                              # 8 ok, CRLF line ending
    criteo_line("0"),                                                   # 9 ok
]


@pytest.fixture(scope="module")
def criteo_world(tmp_path_factory, spark_settings):
    home = tmp_path_factory.mktemp("criteo_home")
    path = home / "train.txt"
    path.write_text("\n".join(CRITEO_LINES) + "\n")
    return replace(spark_settings, home=home), str(path)


def test_criteo_tsv_counts_lines_dates_and_idempotent_reimport(spark, criteo_world):
    settings, path = criteo_world
    with split_size(spark, 512):  # about 6 splits for 10 lines
        r = import_file(spark, settings, "criteo", path, start_date=date(2020, 3, 1), days=5)
    assert (r.layout, r.records_read, r.observations, r.duplicates, r.quarantined) == \
        ("criteo-tsv", 10, 5, 0, 5)
    assert r.quarantine_reasons == {"wrong_column_count": 1, "bad_label": 1, "bad_integer": 2, "blank_line": 1}
    assert r.positives == 2
    assert r.dates == ["2020-03-01", "2020-03-02", "2020-03-03", "2020-03-04", "2020-03-05"]

    obs = rows_of(table(spark, settings, "criteo_observations"), "event_index")
    # row i of 10 over 5 days -> day floor(5 i / 10) = i // 2
    assert [(o["event_index"], o["line_number"], o["date"].isoformat()) for o in obs] == [
        (0, 1, "2020-03-01"), (1, 2, "2020-03-01"), (6, 7, "2020-03-04"), (8, 9, "2020-03-05"),
        (9, 10, "2020-03-05")]
    first = obs[0]
    assert (first["impression_id"], first["label"], first["i1"], first["i2"], first["i13"]) == \
        ("train.txt:0", 1, None, -1, 13)
    assert (first["c1"], first["c24"], first["c25"], first["c26"], first["kaggle_id"]) == \
        ("00000001", "00000018", None, None, None)
    assert obs[1]["i3"] == 123456789012
    assert (obs[3]["i9"], obs[3]["c26"]) == (7, "0000001a")  # the CRLF line is whole

    q = {x.line_number: x for x in table(spark, settings, "criteo_quarantine").collect()}
    assert sorted(q) == [3, 4, 5, 6, 8]
    assert (q[3].reason, q[3].message) == ("wrong_column_count", "expected 40 tab-separated fields, got 39")
    assert (q[4].reason, q[4].message) == ("bad_label", "label must be 0 or 1, got '2'")
    assert (q[5].reason, q[5].message) == ("bad_integer", "i5 is not an integer: '3.5'")
    assert (q[6].reason, q[6].raw) == ("blank_line", "")
    assert q[8].message == "i13 is not an integer: '99999999999999999999'"
    assert q[5].date == date(2020, 3, 3) and q[5].source == "criteo"
    assert q[5].source_file.endswith("/train.txt") and q[5].raw == CRITEO_LINES[4]

    # again, mapped onto other dates: one commit, and nothing of the first import is left
    obs_path = settings.table_path("criteo_observations")
    v = tables.latest_version(spark, obs_path)
    r2 = import_file(spark, settings, "criteo", path, start_date=date(2020, 4, 1), days=5)
    assert tables.latest_version(spark, obs_path) == v + 1 == r2.observations_version
    again = rows_of(table(spark, settings, "criteo_observations"), "event_index")
    assert [o["date"] for o in again] == [date(2020, 4, 1), date(2020, 4, 1), date(2020, 4, 4), date(2020, 4, 5),
                                          date(2020, 4, 5)]
    assert [{**o, "date": None} for o in again] == [{**o, "date": None} for o in obs]
    q2 = table(spark, settings, "criteo_quarantine").collect()
    assert sorted(x.line_number for x in q2) == [3, 4, 5, 6, 8] and {x.run_id for x in q2} == {r2.run_id}
    runs = table(spark, settings, "import_runs").orderBy("finished_at").collect()
    assert [(x.source, x.start_date, x.records_read, x.observations, x.quarantined) for x in runs] == \
        [("criteo", "2020-03-01", 10, 5, 5), ("criteo", "2020-04-01", 10, 5, 5)]


# --- Avazu --------------------------------------------------------------------------------

def avazu_line(id_="1", click="0", hour="14102100", **kw):
    values = {"id": id_, "click": click, "hour": hour, "c1": "1005", "banner_pos": "0", "site_id": "1fbe01fe",
              "site_domain": "f3845767", "site_category": "28905ebd", "app_id": "ecad2386",
              "app_domain": "7801e8d9", "app_category": "07d7df22", "device_id": "a99f214a",
              "device_ip": "ddd2926e", "device_model": "44956a24", "device_type": "1", "device_conn_type": "2",
              "c14": "15706", "c15": "320", "c16": "50", "c17": "1722", "c18": "0", "c19": "35", "c20": "-1",
              "c21": "79"} | kw
    return ",".join(values[c] for c in AVAZU_COLUMNS)


HEADER = "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category," \
         "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
AVAZU_LINES = [
    HEADER,                                                        # line 1
    avazu_line("10000169349117863715", "0", "14102100"),            # 2 ok (id > 2**63)
    avazu_line("2", "1", "14102105"),                               # 3 ok
    avazu_line("10000169349117863715", "1", "14102106"),            # 4 duplicate of line 2
    avazu_line()[:-3],                                              # 5 wrong_column_count
    avazu_line("5", "yes"),                                         # 6 bad_label
    avazu_line("6", hour="14102124"),                               # 7 bad_hour (hour 24)
    avazu_line("7", hour="14132100"),                               # 8 bad_hour (month 13)
    avazu_line(""),                                                 # 9 missing_id
    avazu_line("9", hour="14102201", c1="abc"),                     # 10 bad_integer
    "",                                                             # 11 blank_line
    avazu_line("3", "0", "14102223"),                               # 12 ok, next day
    avazu_line("4", "0", "14102200", device_ip=""),                 # 13 ok, empty string -> null
]


def test_avazu_counts_dedup_quarantine_and_idempotent_reimport(spark, tmp_path, spark_settings):
    settings = replace(spark_settings, home=tmp_path)
    path = tmp_path / "avazu.csv"
    path.write_text("\n".join(AVAZU_LINES) + "\n")
    r = import_file(spark, settings, "avazu", str(path))
    assert (r.layout, r.records_read, r.observations, r.duplicates, r.quarantined) == ("avazu-csv-header", 12, 4, 1, 7)
    assert r.quarantine_reasons == {"wrong_column_count": 1, "bad_label": 1, "bad_hour": 2, "missing_id": 1,
                                    "bad_integer": 1, "blank_line": 1}
    assert (r.positives, r.dates) == (1, ["2014-10-21", "2014-10-22"])

    obs = {o["impression_id"]: o for o in rows_of(table(spark, settings, "avazu_observations"), "line_number")}
    assert sorted(obs) == ["10000169349117863715", "2", "3", "4"]
    kept = obs["10000169349117863715"]
    assert (kept["line_number"], kept["label"], kept["c20"], kept["device_conn_type"]) == (2, 0, -1, 2)
    two, three = obs["2"], obs["3"]
    assert (two["event_time"], two["hour_of_day"], two["day_of_week"], two["date"]) == \
        (datetime(2014, 10, 21, 5), 5, 1, date(2014, 10, 21))  # 2014-10-21 was a Tuesday
    assert (three["event_time"], three["hour_of_day"], three["day_of_week"]) == (datetime(2014, 10, 22, 23), 23, 2)
    assert obs["4"]["device_ip"] is None and obs["4"]["site_id"] == "1fbe01fe"

    quarantine = rows_of(table(spark, settings, "avazu_quarantine"), "line_number")
    assert [(x["line_number"], x["reason"]) for x in quarantine] == [
        (5, "wrong_column_count"), (6, "bad_label"), (7, "bad_hour"), (8, "bad_hour"), (9, "missing_id"),
        (10, "bad_integer"), (11, "blank_line")]
    by_line = {x["line_number"]: x for x in quarantine}
    assert by_line[6]["message"] == "click must be 0 or 1, got 'yes'" and by_line[6]["date"] == date(2014, 10, 21)
    assert by_line[7]["message"] == "hour must be YYMMDDHH (UTC), got '14102124'" and by_line[7]["date"] is None
    assert by_line[10]["message"] == "c1 is not an integer: 'abc'" and by_line[10]["date"] == date(2014, 10, 22)
    assert by_line[5]["message"] == "expected 24 comma-separated fields, got 23"

    v = tables.latest_version(spark, settings.table_path("avazu_observations"))
    import_file(spark, settings, "avazu", str(path))
    assert tables.latest_version(spark, settings.table_path("avazu_observations")) == v + 1
    assert rows_of(table(spark, settings, "avazu_observations"), "line_number") == \
        rows_of(table(spark, settings, "avazu_observations", version=v), "line_number")
    again = rows_of(table(spark, settings, "avazu_quarantine"), "line_number")
    assert [(x["line_number"], x["reason"]) for x in again] == [(x["line_number"], x["reason"]) for x in quarantine]


def test_a_line_over_the_limit_is_quarantined_and_line_1_refuses_the_file(spark, tmp_path, spark_settings,
                                                                          monkeypatch):
    """``MAX_IMPORT_LINE_BYTES`` (64 KiB; 1,000 bytes here): a longer data line is quarantined as
    ``line_too_long``, counted and numbered like any other; a longer line 1 refuses the file."""
    from feature_store import public

    monkeypatch.setattr(public, "MAX_IMPORT_LINE_BYTES", 1000)
    settings = replace(spark_settings, home=tmp_path)
    long_line = criteo_line("1", cats={"c3": "é" * 600})  # 600 characters, 1,200 bytes of it
    path = tmp_path / "train.txt"
    path.write_text("\n".join([criteo_line("0"), long_line, criteo_line("1")]) + "\n")
    r = import_file(spark, settings, "criteo", str(path), days=1)
    assert (r.records_read, r.observations, r.quarantined, r.quarantine_reasons) == (3, 2, 1, {"line_too_long": 1})
    [q] = table(spark, settings, "criteo_quarantine").collect()
    size = len(long_line.encode())
    assert (q.line_number, q.reason, q.message) == (2, "line_too_long", f"line is {size} bytes, over the 1000 bytes limit")
    assert q.raw == long_line  # the raw column keeps its own clip (RAW_LINE_LIMIT)
    path.write_text("\n".join([long_line, criteo_line("0")]) + "\n")
    with pytest.raises(LayoutError, match="line 1 is longer than the 1000 bytes line limit"):
        import_file(spark, settings, "criteo", str(path), days=1)


def test_cli_refuses_a_wrong_layout_before_spark_starts(tmp_path, capsys):
    path = tmp_path / "criteo.tsv"
    path.write_text(criteo_line() + "\n")
    assert main(["--home", str(tmp_path), "import", "avazu", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ctr import: error: ") and "not the avazu layout" in err and "\n" not in err
    assert main(["--home", str(tmp_path), "import", "criteo", str(tmp_path / "nope.txt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "warehouse").exists()


# --- the real public samples ---------------------------------------------------------------

def featurized_equal(a, b) -> bool:
    return a.shape == b.shape and (a != b).nnz == 0


def test_real_criteo_sample_conserved_numbered_and_featurizable(spark, tmp_path, spark_settings):
    from shared.featurize import Featurizer, load_spec

    path = shared_data("criteo-kaggle-random461", "tr.r100000.csv")
    settings = replace(spark_settings, home=tmp_path)
    with split_size(spark, 16384):  # the 103 KB file in 7 splits
        r = import_file(spark, settings, "criteo", str(path))
    assert (r.layout, r.records_read, r.observations, r.quarantined, r.positives) == \
        ("criteo-csv-header", 403, 403, 0, 99)
    assert len(r.dates) == 7 and r.dates[0] == "2014-01-01"

    frame = table(spark, settings, "criteo_observations").orderBy("event_index").toPandas()
    with path.open(newline="") as fh:
        raw = [{k.lower(): v for k, v in row.items()} for row in csv.DictReader(fh)]
    assert list(frame["event_index"]) == list(range(403))
    assert list(frame["line_number"]) == list(range(2, 405))
    assert list(frame["kaggle_id"]) == [int(x["id"]) for x in raw]  # every row at its own line
    assert list(frame["label"]) == [int(x["label"]) for x in raw]
    per_day = frame.groupby("date").size().tolist()
    assert per_day == [sum(1 for i in range(403) if 7 * i // 403 == d) for d in range(7)]

    fz = Featurizer(load_spec("criteo"))
    assert featurized_equal(fz.transform(frame), fz.transform_records(raw))


def test_real_avazu_sample_through_the_cli(spark, tmp_path, capsys):
    from shared.featurize import Featurizer, load_spec

    path = shared_data("avazu-sample100", "avazu_sample.txt")
    assert main(["--home", str(tmp_path), "import", "avazu", str(path)]) == 0
    out = capsys.readouterr().out
    assert "read 100 = 100 observations + 0 duplicates + 0 quarantined" in out

    warehouse = tmp_path.resolve() / "warehouse"
    frame = spark.read.format("delta").load(str(warehouse / "avazu_observations")).orderBy("line_number").toPandas()
    with path.open(newline="") as fh:
        raw = []
        for row in csv.DictReader(fh):
            rec = {k.lower(): v for k, v in row.items()}
            t = datetime.strptime(rec.pop("hour"), "%y%m%d%H")
            rec["hour_of_day"], rec["day_of_week"] = t.hour, t.weekday()
            raw.append(rec)
    assert list(frame["impression_id"]) == [x["id"] for x in raw]
    assert list(frame["label"]) == [int(x["click"]) for x in raw] and frame["label"].sum() == 20
    assert set(frame["date"].astype(str)) == {"2014-10-21"}
    fz = Featurizer(load_spec("avazu"))
    assert featurized_equal(fz.transform(frame), fz.transform_records(raw))
    runs = spark.read.format("delta").load(str(warehouse / "import_runs")).collect()
    assert [(x.source, x.records_read, x.observations, x.positives) for x in runs] == [("avazu", 100, 100, 20)]
