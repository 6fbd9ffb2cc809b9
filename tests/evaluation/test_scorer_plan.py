"""Plan mode names the scorer at its version and what scoring a job costs: a classifier's time on one GPU
and on a CPU beside Perspective's hours; with scorer=perspective the requests and hours of the sweep; and
it refuses MEDA's and INST's bulk annotation through Perspective in one line (exit 2)."""


import pytest
from helpers import compose_job, paper_overrides, tiny_classifier, write_paper_inputs

from detox.core.schema import ConfigError
from detox.job import JobConfig


@pytest.fixture
def paper(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DETOX_HASH_CACHE", "")
    return ["experiment=paper_olmo1b", *paper_overrides(write_paper_inputs(tmp_path / "in")), f"root={tmp_path / 'r'}"]


def plan(launch_module, capsys, *args) -> tuple[int, str, str]:
    code = launch_module.plan_command([*args, "plan=true"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_paper_scale_plan_names_the_open_scorer_and_its_time(launch_module, capsys, paper, tmp_path):
    code, out, _ = plan(launch_module, capsys, *paper)
    assert code == 0
    # offline and not in the hub cache: the default's revision resolves to no commit, and the plan says so
    assert "scorer: unitary/unbiased-toxic-roberta@main (unresolved): its revision main resolves to no commit" in out
    assert "the job would stop" in out
    # 214 prompts x 14 groups greedy, 3,000 RTP prompts x 25 samples
    assert "scoring a job's evaluation: 77,996 texts (toxigen 2,996 + rtp 3,000 x 25)" in out
    assert "on one GPU (estimated)" in out and "Perspective at 1 QPS: 21.7 h" in out
    local = tiny_classifier(tmp_path / "models" / "unbiased-toxic-roberta", labels=("toxicity", "insult"), multi_label=True)
    code, out, _ = plan(launch_module, capsys, *paper, f"scorer.model={local}")
    identity = JobConfig.from_dict(compose_job(*paper, f"scorer.model={local}")).scorer.identity()["files"]
    assert code == 0 and f"scorer: unbiased-toxic-roberta files:{identity[:12]} (local folder {local}, " \
                          f"files sha256 {identity})" in out


def test_perspective_plans_its_requests_and_hours_and_refuses_bulk_annotation(launch_module, capsys, paper):
    code, out, _ = plan(launch_module, capsys, "-m", *paper, "scorer=perspective", "ratio=0,10", "treatment=none,sft")
    assert code == 0
    assert "scorer: perspective TOXICITY (unversioned API) (the Perspective API closes on 31 December 2026" in out
    assert "77,996 requests, 21.7 h at 1 QPS" in out
    assert "8 evaluation(s) to build: 623,968 requests, 173 h (7.2 days) at 1 QPS" in out  # 2 ratios x 2 seeds x 2
    assert "training documents scored (SFT's filter): at least 2,000 requests" in out
    code, out, err = plan(launch_module, capsys, *paper, "scorer=perspective", "method=meda")
    assert code == 2 and not out.strip()
    [line] = err.strip().splitlines()
    assert line == ("invalid configuration: scorer=perspective method=meda would send about 47,028,847 documents to "
                    "the Perspective API to annotate the mixture (13,064 h at 1 QPS), and it closes on 31 December "
                    "2026: annotate with scorer=classifier")
    with pytest.raises(ConfigError, match="scorer=perspective method=inst would send about"):
        JobConfig.from_dict(compose_job(*paper, "scorer=perspective", "method=inst"))
