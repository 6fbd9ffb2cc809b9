import threading

import pytest

from detox.core.cache import StageCache, stable_key


def test_key_ignores_order_and_sees_values():
    assert stable_key({"a": 1, "b": {"c": 2}}) == stable_key({"b": {"c": 2}, "a": 1})
    assert stable_key({"a": 1}) != stable_key({"a": 2})


def test_built_once_then_hit(tmp_path):
    cache, calls = StageCache(tmp_path), []

    def build(work):
        calls.append(work)
        (work / "out.txt").write_text("done")

    first = cache.get_or_build("stage", {"x": 1}, build)
    second = cache.get_or_build("stage", {"x": 1}, build)
    assert (first.hit, second.hit, len(calls)) == (False, True, 1)
    assert (second.path / "out.txt").read_text() == "done"
    assert cache.get_or_build("stage", {"x": 2}, build).hit is False


def test_failed_build_is_never_complete_and_keeps_its_partial_work(tmp_path):
    cache = StageCache(tmp_path)

    def crash(work):
        (work / "checkpoint").write_text("step 5")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("stage", {"x": 1}, crash)
    seen = []
    artifact = cache.get_or_build("stage", {"x": 1}, lambda work: seen.append((work / "checkpoint").read_text()))
    assert seen == ["step 5"] and artifact.hit is False and artifact.path.is_dir()


def test_concurrent_jobs_build_once(tmp_path):
    cache, calls = StageCache(tmp_path), []
    barrier = threading.Barrier(4)

    def build(work):
        calls.append(1)

    def job():
        barrier.wait()
        cache.get_or_build("stage", {"x": 1}, build)

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_an_experiment_created_meanwhile_by_another_job_is_used(tmp_path, monkeypatch):
    """On a tracking server, two jobs may both find no experiment and both create it: the loser uses
    the winner's (on sqlite a file lock prevents the race)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

    from helpers import compose_job
    from detox.config import JobConfig
    from detox.tracking import experiment_id

    job = JobConfig.from_dict(compose_job(f"root={tmp_path}", "mlflow.experiment=raced"))
    create = mlflow.create_experiment

    def lose_the_race(name, artifact_location=None):
        create(name, artifact_location=artifact_location)  # the other job's
        raise MlflowException("already exists", error_code=RESOURCE_ALREADY_EXISTS)

    monkeypatch.setattr(mlflow, "create_experiment", lose_the_race)
    assert experiment_id(job) == mlflow.get_experiment_by_name("raced").experiment_id
