"""A real MLflow SQLite store under a temporary data root."""

import os

from shared.config import load_settings
from shared.mlflow_utils import configure_mlflow, get_or_create_experiment


def test_run_logged_and_read_back(settings, tmp_path):
    mlflow = configure_mlflow(settings)
    exp_id = get_or_create_experiment(settings, "unit")
    assert get_or_create_experiment(settings, "unit") == exp_id  # get, not create twice
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_params({"C": 0.5, "bits": 20})
        mlflow.log_metric("logloss", 0.4321)
        mlflow.log_artifact(str(note))

    client = mlflow.MlflowClient()
    got = client.get_run(run.info.run_id)
    assert got.data.params == {"C": "0.5", "bits": "20"}
    assert got.data.metrics["logloss"] == 0.4321
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="note.txt",
                                                dst_path=str(tmp_path / "dl"))
    assert open(local).read() == "hello"
    assert (settings.mlflow_dir / "mlflow.db").exists()
    assert str(settings.mlflow_dir / "artifacts") in got.info.artifact_uri


def test_pointing_mlflow_at_one_store_leaves_the_next_data_roots_default_alone(tmp_path, monkeypatch):
    """MLflow exports the URI it is given; a second command in the same process with another
    data root must still get that root's own store, not the first one's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = load_settings({"home": str(tmp_path / "a")}, env=os.environ)
    mlflow = configure_mlflow(first)
    assert mlflow.get_tracking_uri() == first.mlflow_tracking_uri
    second = load_settings({"home": str(tmp_path / "b")}, env=os.environ)
    assert second.mlflow_tracking_uri != first.mlflow_tracking_uri and "/b/" in second.mlflow_tracking_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(tmp_path / "given.db"))
    configure_mlflow(first)
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///" + str(tmp_path / "given.db")  # the user's, kept
