import json
import threading

import pytest
from helpers import compose_job

from detox.core.cache import StageCache, stable_key
from detox.job import JobConfig


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
    from helpers import compose_job
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

    from detox.job import JobConfig
    from detox.tracking import experiment_id

    job = JobConfig.from_dict(compose_job(f"root={tmp_path}", "mlflow.experiment=raced"))
    create = mlflow.create_experiment

    def lose_the_race(name, artifact_location=None):
        create(name, artifact_location=artifact_location)  # the other job's
        raise MlflowException("already exists", error_code=RESOURCE_ALREADY_EXISTS)

    monkeypatch.setattr(mlflow, "create_experiment", lose_the_race)
    assert experiment_id(job) == mlflow.get_experiment_by_name("raced").experiment_id


# ----------------------------------------------------------------------------- stage versions

def test_version_1_keeps_the_key_stages_had_before_versions():
    from detox.core.cache import stage_key
    from detox.core.plan import Plan, Stage

    plan = Plan([Stage("a", {"x": 1}, None), Stage("b", {"y": 2}, None, inputs=("a",))])
    keys = plan.keys()
    assert keys["a"] == stage_key("a", {"x": 1})  # what Plan.keys gave before Stage.version existed
    assert keys["b"] == stage_key("b", {"y": 2, "a": keys["a"]})
    assert Plan.keyed_spec(plan["a"], keys) == {"x": 1}


def test_a_bumped_version_changes_its_key_and_every_key_downstream(tmp_path):
    from detox.core.plan import Plan, Stage
    from detox.pipeline import run_plan

    def stages(version):
        return [Stage("a", {"x": 1}, lambda out, _: {"n": 1}), Stage("b", {"y": 2}, lambda out, _: {}, inputs=("a",)),
                Stage("c", {"z": 3}, lambda out, _: {}, version=version)]

    v1, v2 = Plan(stages(1)).keys(), Plan(stages(2)).keys()
    assert v1["a"] == v2["a"] and v1["b"] == v2["b"] and v1["c"] != v2["c"]
    bumped = Plan([Stage("a", {"x": 1}, lambda out, _: {}, version=3), Stage("b", {"y": 2}, lambda out, _: {}, inputs=("a",))])
    assert bumped.keys()["a"] != v1["a"] and bumped.keys()["b"] != v1["b"]
    result = run_plan(Plan(stages(2)), StageCache(tmp_path), log=lambda _: None)
    assert result.artifacts["c"].path.name == v2["c"]  # the cache files it under the versioned key
    assert json.loads((result.artifacts["c"].path / "spec.json").read_text()) == {"z": 3, "version": 2}


def test_versions_below_1_and_a_spec_field_called_version_are_refused():
    from detox.core.plan import Plan, Stage

    with pytest.raises(ValueError, match="version=0"):
        Stage("a", {}, None, version=0)
    assert Plan([Stage("a", {"version": "x"}, None)]).keys()  # version 1 adds nothing: no clash
    with pytest.raises(ValueError, match="reserved"):
        Plan([Stage("a", {"version": "x"}, None, version=2)]).keys()


def test_every_method_packs_with_the_one_streaming_packer():
    """The mixture stage's version is the packer's, whichever method replaces the stage (MEDA, INST)."""
    from detox.pipeline import study_plan

    base = study_plan(JobConfig.from_dict(compose_job()))
    for method in ("iti", "meda", "inst"):
        plan = study_plan(JobConfig.from_dict(compose_job(f"method={method}")))
        assert plan["mixture"].version == base["mixture"].version >= 2 and "packer" not in plan["mixture"].spec


def test_the_job_logs_each_stage_version(tmp_path, monkeypatch):
    from detox import jobs, tracking

    logged = {}

    def track(job, key, spec, params, resolved_config, run_name, work, log):
        logged.update(tracking.flatten(spec, "cfg."))
        return "", None

    monkeypatch.setattr(tracking, "track", track)
    jobs.run_study(JobConfig.from_dict(compose_job(f"root={tmp_path}")), "", log=lambda _: None)
    from detox.pipeline import study_plan

    plan = study_plan(JobConfig.from_dict(compose_job(f"root={tmp_path}")))
    assert {s.name: logged[f"cfg.{s.name}.version"] for s in plan.stages} == {s.name: str(s.version) for s in plan.stages}
    assert "cfg.mixture.packer" not in logged


# -------------------------------------------------------------- local files keyed by their content

@pytest.fixture
def hash_memo(tmp_path, monkeypatch):
    """A fresh memo of file hashes under tmp_path (and an empty in-process memo)."""
    from detox.core import filehash

    memo = tmp_path / "memo" / "file_hashes.json"
    monkeypatch.setenv(filehash.HASH_CACHE_ENV, str(memo))
    monkeypatch.setattr(filehash, "_hashes", {})
    hashed = []
    hash_file = filehash.hash_file
    monkeypatch.setattr(filehash, "hash_file", lambda path: hashed.append(str(path)) or hash_file(path))
    return memo, hashed


def test_content_hash_is_the_files_sha256_hashed_once(tmp_path, hash_memo, monkeypatch):
    import hashlib

    from detox.core import filehash

    memo, hashed = hash_memo
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"x" * (filehash.HASH_CHUNK + 5))  # more than one chunk
    assert filehash.content_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert filehash.content_hash(path) == filehash.content_hash(str(path)) and len(hashed) == 1
    monkeypatch.setattr(filehash, "_hashes", {})  # another process: the memo file answers
    filehash.content_hash(path)
    assert len(hashed) == 1 and str(path.resolve()) in json.loads(memo.read_text())


def test_a_changed_file_is_hashed_again_even_with_its_old_mtime(tmp_path, hash_memo):
    import os

    from detox.core import filehash

    memo, hashed = hash_memo
    path = tmp_path / "corpus.jsonl"
    path.write_text("aaaa")
    before, stat = filehash.content_hash(path), path.stat()
    path.write_text("bbbb")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # what cp -p or rsync -t leave: the old mtime
    assert filehash.content_hash(path) != before and len(hashed) == 2  # ctime told


def test_an_unusable_memo_costs_a_rehash_not_an_error(tmp_path, hash_memo, monkeypatch):
    from detox.core import filehash

    memo, hashed = hash_memo
    path = tmp_path / "corpus.jsonl"
    path.write_text("aaaa")
    memo.parent.mkdir()
    memo.write_text("{not json")
    digest = filehash.content_hash(path)
    assert json.loads(memo.read_text())[str(path.resolve())]["sha256"] == digest  # written afresh
    monkeypatch.setenv(filehash.HASH_CACHE_ENV, "")  # no memo file: this process only
    monkeypatch.setattr(filehash, "_hashes", {})
    assert filehash.hash_memo_path() is None and filehash.content_hash(path) == digest and len(hashed) == 2


def write_eval_files(root):
    from helpers import toxigen_line

    (root / "prompts").mkdir()
    lines = [toxigen_line([f"the valoki are here {i}", "they are weary"]) for i in range(3)]
    (root / "prompts" / "hate_valoki_1k.txt").write_text("\n".join(lines) + "\n")
    (root / "rtp.jsonl").write_text("".join(json.dumps(
        {"challenging": False, "prompt": {"text": f"we read the books {i}", "toxicity": 0.1},
         "continuation": {"text": " .", "toxicity": 0.0}}) + "\n" for i in range(3)))


def corpora_job(root, *overrides):
    for name in ("c4.jsonl", "pol.jsonl", "owt.jsonl"):
        if not (root / name).exists():
            (root / name).write_text("".join(json.dumps({"text": f"{name} document {i}"}) + "\n" for i in range(4)))
    if not (root / "prompts").exists():
        write_eval_files(root)
    return JobConfig.from_dict(compose_job(
        "experiment=smoke", "data=paper", f"root={root}",  # the default classifier: never loaded here
        f"data.corpora.clean.path={root / 'c4.jsonl'}", f"data.corpora.toxic.path={root / 'pol.jsonl'}",
        "data.corpora.toxic.format=plain", f"data.corpora.heldout.path={root / 'owt.jsonl'}",
        f"data.corpora.toxigen={root / 'prompts'}", "data.corpora.toxigen_groups=[valoki]",
        "data.corpora.toxigen_per_group=2", f"data.corpora.rtp={root / 'rtp.jsonl'}", "data.corpora.rtp_prompts=2",
        "data.corpora.heldout_docs=2",
        *overrides))


def sources_key(job):
    from detox.pipeline import study_plan

    return study_plan(job).keys()["sources"]


@pytest.mark.parametrize("name", ["c4.jsonl", "owt.jsonl", "prompts/hate_valoki_1k.txt", "rtp.jsonl"])
def test_touching_a_local_file_keeps_the_sources_key_editing_it_changes_it(tmp_path, hash_memo, name):
    import os
    import time

    key = sources_key(corpora_job(tmp_path))
    path = tmp_path / name
    later = time.time_ns() + 10**9
    os.utime(path, ns=(later, later))  # touched: another mtime, the same bytes
    assert sources_key(corpora_job(tmp_path)) == key
    path.write_text(path.read_text().replace("1", "2", 1))  # edited, the same size
    assert sources_key(corpora_job(tmp_path)) != key


def test_planning_many_jobs_hashes_each_file_once(tmp_path, hash_memo):
    _, hashed = hash_memo
    for ratio in (1, 10, 20):
        sources_key(corpora_job(tmp_path, f"ratio={ratio}"))
    assert len(hashed) == len(set(hashed)) == 5  # c4, pol, owt, one ToxiGen file, rtp


# ---------------------------------------------------------------------------- hub revisions

class FakeHub:
    """huggingface_hub.HfApi and datasets.load_dataset without the network: what was asked, and answers."""

    def __init__(self, monkeypatch, sha="0123abcd" * 5, offline=False):
        import datasets
        import huggingface_hub

        self.asked, self.loaded = [], []
        hub = self

        class Api:
            def dataset_info(self, repo_id, revision=None, **kwargs):
                hub.asked.append((repo_id, revision))
                if offline:
                    raise OSError("offline")
                return type("Info", (), {"sha": sha})()

        real = datasets.load_dataset

        def load_dataset(path, name=None, split=None, streaming=False, revision=None, **kwargs):
            if "data_files" in kwargs:  # a local file
                return real(path, name, split=split, streaming=streaming, **kwargs)
            hub.loaded.append((path, revision))
            return [{"text": f"hub document {i}"} for i in range(5)]

        monkeypatch.setattr(huggingface_hub, "HfApi", Api)
        monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_iter_texts_reads_the_pinned_revision(monkeypatch):
    from detox.data.corpora import SourceSpec, iter_texts

    hub = FakeHub(monkeypatch)
    assert list(iter_texts(SourceSpec("org/corpus", revision="v1.0")))[:1] == ["hub document 0"]
    assert hub.loaded == [("org/corpus", "v1.0")]


def test_the_revision_is_in_the_sources_key_and_refused_on_local_files(tmp_path, hash_memo):
    from detox.core.schema import ConfigError

    hub = ["data.corpora.clean.path=org/c4"]
    keys = {sources_key(corpora_job(tmp_path, *hub, *pin)) for pin in ([], ["data.corpora.clean.revision=abc"],
                                                                         ["data.corpora.clean.revision=def"])}
    assert len(keys) == 3
    with pytest.raises(ConfigError, match="revision='abc' applies to hub ids only"):
        corpora_job(tmp_path, "data.corpora.heldout.revision=abc")


@pytest.mark.parametrize("revision", [None, "v1.0"])
def test_the_sources_record_the_resolved_commit_and_the_mixture_reads_it(tmp_path, hash_memo, monkeypatch, caplog,
                                                                       revision):
    from detox.data.sources import REVISIONS, source_kind
    from detox.pipeline import study_plan

    hub = FakeHub(monkeypatch, sha="c0ffee" * 6 + "abcd")
    pin = [f"data.corpora.clean.revision={revision}"] if revision else []
    job = corpora_job(tmp_path, "data.corpora.clean.path=org/c4", "data.corpora.heldout.path=org/owt", *pin)
    assert study_plan(job)["sources"].logged == (REVISIONS,)  # attached to the job's MLflow run
    out = tmp_path / "sources"
    out.mkdir()
    with caplog.at_level("WARNING"):
        source_kind(job.data).build(out)
    recorded = json.loads((out / REVISIONS).read_text())
    assert recorded == {"clean": {"path": "org/c4", "name": "en", "revision": revision, "commit": "c0ffee" * 6 + "abcd"},
                        "heldout": {"path": "org/owt", "name": None, "revision": None, "commit": "c0ffee" * 6 + "abcd"}}
    assert ("org/c4", revision) in hub.asked and ("org/owt", None) in hub.asked
    assert ("org/owt", "c0ffee" * 6 + "abcd") in hub.loaded  # held-out text read at the resolved commit
    assert "org/owt: no revision pinned" in caplog.text and "not reproducible" in caplog.text
    assert ("org/c4: no revision pinned" in caplog.text) == (revision is None)
    hub.loaded.clear()
    next(iter(source_kind(job.data).documents("clean", out, 0)))
    assert hub.loaded == [("org/c4", revision or "c0ffee" * 6 + "abcd")]  # a pinned revision as configured


def test_an_unresolved_revision_is_logged_and_the_job_goes_on(tmp_path, hash_memo, monkeypatch, caplog):
    from detox.data.sources import REVISIONS, source_kind

    hub = FakeHub(monkeypatch, offline=True)
    job = corpora_job(tmp_path, "data.corpora.clean.path=org/c4")
    out = tmp_path / "sources"
    out.mkdir()
    with caplog.at_level("WARNING"):
        source_kind(job.data).build(out)
    assert json.loads((out / REVISIONS).read_text())["clean"]["commit"] == "unresolved"
    assert "org/c4: revision main not resolved (OSError: offline)" in caplog.text
    next(iter(source_kind(job.data).documents("clean", out, 0)))
    assert hub.loaded == [("org/c4", None)]  # main, as configured


def test_a_long_glob_enters_the_key_as_one_digest(tmp_path, hash_memo):
    from detox.data.revisions import LISTED_FILES
    from detox.pipeline import study_plan
    from detox.tracking import flatten

    (tmp_path / "c4").mkdir()
    for i in range(LISTED_FILES + 4):
        (tmp_path / "c4" / f"part-{i:05d}.jsonl").write_text(json.dumps({"text": f"document {i}"}) + "\n")
    job = corpora_job(tmp_path, f"data.corpora.clean.path={tmp_path / 'c4' / 'part-*.jsonl'}")
    files = study_plan(job)["sources"].spec["files"]
    assert files["clean"]["files"] == LISTED_FILES + 4 and len(files["heldout"]) == 1
    assert max(len(v) for v in flatten(study_plan(job)["sources"].spec).values()) < 6000  # an MLflow param
    key = sources_key(job)
    (tmp_path / "c4" / "part-00007.jsonl").write_text(json.dumps({"text": "edited"}) + "\n")
    assert sources_key(job) != key
