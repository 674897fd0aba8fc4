"""A real MLflow SQLite store under a temporary data root."""

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
