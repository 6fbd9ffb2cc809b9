"""A stage's version must be bumped when what it produces changes: this test notices when it was not.

Each study stage of a tiny job (experiment=smoke, ratio 10) is built and its artifact fingerprinted;
the fingerprints are recorded per (stage, version) in tests/stage_fingerprints.json. A stage whose
output changed while its version (detox.core.plan.Stage.version) and its inputs' outputs did not
fails the test: the cache would hand jobs artifacts made by the old code under the same key.

When it fails, either the change is a bug (the output should not have changed), or it is meant: bump
the stage's `version=` (detox/pipeline.py for the study stages) and re-record the table,

    DETOX_RECORD_FINGERPRINTS=1 HF_HUB_OFFLINE=1 python -m pytest -q tests/test_stage_versions.py

(a change that comes only from a library upgrade and means nothing to the stages downstream, e.g. a
new field in tokenizer.json, may be re-recorded without a bump). Stages downstream of a changed one
change with it and need no bump of their own: their keys chain the changed stage's key.

What a fingerprint covers: every file of the artifact but `spec.json` (the key's input, not the
output); JSON and JSON lines parsed and re-serialised sorted, without the fields that vary from run
to run (throughput, MFU, library versions). Sources, tokenizer and mixture are hashed exactly (their
floats are computed in Python, the same on every machine). The pre-trained model's float sums may
differ between machines (BLAS kernels, SIMD width), so the pretrain stage's fingerprint holds its
weights' names, shapes and dtypes exactly and per-tensor mean and standard deviation, the loss curve
and the metrics to three significant digits: any change of the training itself moves them further.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
from helpers import compose_job

from detox.core.artifacts import SPEC, STAGE
from detox.core.cache import StageCache
from detox.core.plan import Plan
from detox.job import JobConfig
from detox.pipeline import run_plan, study_plan

TABLE = Path(__file__).with_name("stage_fingerprints.json")
RECORD_ENV = "DETOX_RECORD_FINGERPRINTS"
STAGES = (STAGE.SOURCES, STAGE.TOKENIZER, STAGE.MIXTURE, STAGE.PRETRAIN)
TOLERANT = {STAGE.PRETRAIN: 3}  # stage -> significant digits its floats are compared to
VOLATILE = ("_per_s", "_mfu", "seconds", "transformers_version")  # JSON keys that vary between runs or installs


def tiny_plan(root: Path) -> Plan:
    job = JobConfig.from_dict(compose_job("experiment=smoke", "ratio=10", f"root={root}"))
    plan = study_plan(job)
    return Plan([plan[name] for name in STAGES])


def build(root: Path) -> tuple[Plan, dict[str, str]]:
    """The tiny plan built in a fresh cache under `root`, and each stage's fingerprint."""
    plan = tiny_plan(root)
    result = run_plan(plan, StageCache(root / "cache"), log=lambda _: None)
    return plan, {name: fingerprint(name, artifact.path) for name, artifact in result.artifacts.items()}


def canonical(value, digits: int | None):
    """JSON data without its volatile keys, floats rounded to `digits` significant digits (None: exact)."""
    if isinstance(value, dict):
        return {k: canonical(v, digits) for k, v in sorted(value.items()) if not k.endswith(VOLATILE)}
    if isinstance(value, list):
        return [canonical(v, digits) for v in value]
    if isinstance(value, float) and digits is not None and math.isfinite(value):
        return float(f"{value:.{digits}g}") + 0.0  # + 0.0: -0.0 and 0.0 alike
    return value


def file_content(path: Path, digits: int | None) -> bytes:
    if path.suffix == ".json":
        return json.dumps(canonical(json.loads(path.read_text()), digits), sort_keys=True).encode()
    if path.suffix == ".jsonl":
        return b"\n".join(json.dumps(canonical(json.loads(line), digits), sort_keys=True).encode()
                          for line in path.read_text().splitlines() if line.strip())
    if path.suffix == ".safetensors" and digits is not None:
        from safetensors import safe_open

        summary = {}
        with safe_open(str(path), framework="np") as tensors:
            for name in sorted(tensors.keys()):
                tensor = tensors.get_tensor(name)
                values = tensor.astype("float64")
                summary[name] = [str(tensor.dtype), list(tensor.shape),
                                 canonical(float(values.mean()), digits), canonical(float(values.std()), digits)]
        return json.dumps(summary, sort_keys=True).encode()
    return path.read_bytes()


def fingerprint(stage: str, folder: Path) -> str:
    """A sha256 over the artifact's files (relative names and canonical contents), `spec.json` left out."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SPEC):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(hashlib.sha256(file_content(path, TOLERANT.get(stage))).digest())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build(tmp_path_factory.mktemp("fingerprints"))


def test_fingerprints_are_deterministic(built, tmp_path):
    """The same job built again in another cache gives the same fingerprints (else the check is noise)."""
    _, again = build(tmp_path)
    assert again == built[1]


def verdict(plan: Plan, fingerprints: dict[str, str], table: dict) -> str | None:
    """What is wrong with the recorded table for these fingerprints, in the developer's words; None if nothing."""
    record = f"{RECORD_ENV}=1 HF_HUB_OFFLINE=1 python -m pytest -q tests/test_stage_versions.py"
    unrecorded, changed = [], []
    for name in STAGES:
        version = plan[name].version
        recorded = table.get(name, {}).get(str(version))
        if recorded is None:
            unrecorded.append(f"{name} (version {version})")
        elif recorded != fingerprints[name]:
            changed.append(name)
    if unrecorded:
        return f"no fingerprint recorded for {', '.join(unrecorded)} in tests/{TABLE.name}: record it with `{record}`"
    if not changed:
        return None
    downstream = [name for name in changed if plan.upstream(plan[name].inputs) & set(changed)]
    to_bump = [name for name in changed if name not in downstream]
    return (f"the output of stage {', '.join(to_bump)} changed while its version did not"
            + (f" (and with it {', '.join(downstream)} downstream, which need no bump: their keys chain "
               "the changed stage's)" if downstream else "")
            + ": if the change is meant, bump `version` of "
            + ", ".join(f"{name} (now {plan[name].version}: Stage(..., version={plan[name].version + 1}) in "
                        "detox/pipeline.py, or in the method that makes it)" for name in to_bump)
            + f", so that no job re-uses what the old code built, then re-record the fingerprints with `{record}`. "
              "If the output should not have changed, the change is a bug.")


def test_a_changed_output_has_a_bumped_version(built):
    plan, fingerprints = built
    table = json.loads(TABLE.read_text()) if TABLE.is_file() else {}
    if os.environ.get(RECORD_ENV):
        for name in STAGES:
            table.setdefault(name, {})[str(plan[name].version)] = fingerprints[name]
        TABLE.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"recorded the fingerprints of {', '.join(STAGES)} in {TABLE.name}")
    message = verdict(plan, fingerprints, table)
    assert message is None, message


def test_the_message_names_the_stage_to_bump(tmp_path):
    """A changed tokenizer changes the mixture and the model too: only the tokenizer is to be bumped."""
    plan = tiny_plan(tmp_path)
    table = {name: {str(plan[name].version): name} for name in STAGES}
    assert verdict(plan, {name: name for name in STAGES}, table) is None
    message = verdict(plan, {**{name: name for name in STAGES}, "tokenizer": "new", "mixture": "new",
                             "pretrain": "new"}, table)
    assert message.startswith("the output of stage tokenizer changed while its version did not")
    assert "mixture, pretrain downstream" in message and "version=2) in detox/pipeline.py" in message
    assert RECORD_ENV in message
    plan[STAGE.TOKENIZER].version = 2  # bumped, not yet recorded
    assert "no fingerprint recorded for tokenizer (version 2)" in verdict(plan, {name: name for name in STAGES}, table)


def test_the_table_names_study_stages():
    table = json.loads(TABLE.read_text())
    assert set(table) <= set(STAGES) and all(v.isdigit() for versions in table.values() for v in versions)
