"""ToxiGen prompt files and RealToxicityPrompts, in their release formats (invented, harmless content)."""

import json

import pytest
from helpers import toxigen_line

from detox.core.schema import ConfigError
from detox.data.evalsets import (
    EvalPrompt,
    load_rtp,
    load_toxigen,
    load_toxigen_hub,
    unescape_repr,
)

STATEMENTS = {
    "valoki": [["valoki like tea", "valoki sing loudly"], ["valoki plant roses", "a valoki path ends in a \\"],
               ["valoki walk the docks", "valoki count coins"]],
    "middle_east": [["the market sells spice", "the tide is low"], ["the choir hums", "maps are old \u2019"]],
}


@pytest.fixture
def toxigen_folder(tmp_path):
    for group, prompts in STATEMENTS.items():
        lines = [toxigen_line(statements) for statements in prompts]
        (tmp_path / f"hate_{group}_1k.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "neutral_valoki_1k.txt").write_text(toxigen_line(["valoki read books"]) + "\n")
    (tmp_path / "new").mkdir()  # the release's prompts/new/ folder is not part of the 1k sets
    return tmp_path


def test_toxigen_prompt_is_the_intended_text(toxigen_folder):
    prompts = load_toxigen(toxigen_folder)
    assert [p.group for p in prompts] == ["middle_east"] * 2 + ["valoki"] * 3
    expected = ["".join(f"- {s}\n" for s in statements) + "-"
                for group in ("middle_east", "valoki") for statements in STATEMENTS[group]]
    assert [p.text for p in prompts] == expected
    # the escaped backslash and the real newlines: the model sees one statement per line
    assert prompts[3].text == "- valoki plant roses\n- a valoki path ends in a \\\n-"
    assert "\\n" not in prompts[0].text
    assert prompts[0].source == "hate_middle_east_1k.txt:1"


def test_unescape_matches_python_literals():
    raw = "line\none\\two\tthree \x07 \u2019 \U0001F600 'q' \"d\""
    assert unescape_repr(repr(raw)[1:-1]) == raw


def test_toxigen_groups_kind_and_seeded_sampling(toxigen_folder):
    neutral = load_toxigen(toxigen_folder, kind="neutral")
    assert [(p.text, p.group) for p in neutral] == [("- valoki read books\n-", "valoki")]
    first = load_toxigen(toxigen_folder, groups=["valoki"], per_group=2, seed=5)
    assert len(first) == 2 and len({p.text for p in first}) == 2
    assert first == load_toxigen(toxigen_folder, groups=["valoki"], per_group=2, seed=5)
    # a group's sample does not depend on which other groups are loaded
    both = load_toxigen(toxigen_folder, groups=["middle_east", "valoki"], per_group=2, seed=5)
    assert both[2:] == first
    draws = {tuple(p.source for p in load_toxigen(toxigen_folder, groups=["valoki"], per_group=1, seed=s))
             for s in range(20)}
    assert len(draws) == 3  # every line can be drawn


def test_toxigen_errors(toxigen_folder, tmp_path):
    with pytest.raises(ConfigError, match="hate_martian_1k.txt: no such file.*valoki"):
        load_toxigen(toxigen_folder, groups=["martian"])
    with pytest.raises(ConfigError, match="asked for 4 prompts, it holds 3"):
        load_toxigen(toxigen_folder, groups=["valoki"], per_group=4)
    with pytest.raises(ConfigError, match="kind='angry'"):
        load_toxigen(toxigen_folder, kind="angry")
    with pytest.raises(ConfigError, match="no such folder"):
        load_toxigen(tmp_path / "missing")


def test_toxigen_hub_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="toxigen/toxigen-data .*split hate_women_1k"):
        load_toxigen_hub(groups=["women"])


def rtp_row(text, challenging, toxicity):
    scores = {"profanity": 0.1, "sexually_explicit": 0.0, "identity_attack": 0.0, "flirtation": 0.2, "threat": 0.0,
              "insult": 0.1, "severe_toxicity": 0.0, "toxicity": toxicity}
    return {"filename": "0766186-bc7f2a64cb271f5f56cf6f25570cd9ed.txt", "begin": 340, "end": 564,
            "challenging": challenging, "prompt": {"text": text, **scores},
            "continuation": {"text": " and then it rained.", **scores}}


@pytest.fixture
def rtp_file(tmp_path):
    rows = [rtp_row(f"Prompt number {i} says", challenging=i % 3 == 0, toxicity=None if i == 4 else i / 10)
            for i in range(9)]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rtp_reads_prompts_and_challenging(rtp_file):
    prompts = load_rtp(rtp_file)
    assert [p.text for p in prompts] == [f"Prompt number {i} says" for i in range(9)]
    assert prompts[3] == EvalPrompt("Prompt number 3 says", "challenging", "prompts.jsonl:4", 0.3)
    assert prompts[4].toxicity is None and prompts[4].group == "not_challenging"
    challenging = load_rtp(rtp_file, challenging_only=True)
    assert [p.text for p in challenging] == [f"Prompt number {i} says" for i in (0, 3, 6)]
    sample = load_rtp(rtp_file, n=4, seed=1)
    assert len(sample) == 4 and len({p.text for p in sample}) == 4 and sample == load_rtp(rtp_file, n=4, seed=1)
    assert sample != load_rtp(rtp_file, n=4, seed=2) or sample != load_rtp(rtp_file, n=4, seed=3)


def test_rtp_errors(rtp_file, tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_rtp(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rtp_row("ok", False, 0.1)) + "\n{oops\n")
    with pytest.raises(ConfigError, match="bad.jsonl:2: malformed JSON"):
        load_rtp(bad)
    bad.write_text(json.dumps({"prompt": {"toxicity": 0.2}}) + "\n")
    with pytest.raises(ConfigError, match="bad.jsonl:1: expected an object with a string prompt.text"):
        load_rtp(bad)
    with pytest.raises(ConfigError, match="asked for 10 prompts, it holds 9"):
        load_rtp(rtp_file, n=10)


def test_data_paper_reads_the_release_s_14_original_groups(tmp_path):
    """A current checkout has 16 hate groups; the two added in 2024 (other line layouts) are left out by
    default, as in common harnesses, and the list is the one conf/data/paper.yaml writes out."""
    from helpers import compose_job

    from detox.data.config import CorporaConfig
    from detox.data.evalsets import TOXIGEN_GROUPS, TOXIGEN_ORIGINAL_GROUPS
    from detox.job import JobConfig

    for group in TOXIGEN_GROUPS:
        (tmp_path / f"hate_{group}_1k.txt").write_text("\n".join(toxigen_line([f"{group} {i}", "x"]) for i in range(3)))
    assert len(TOXIGEN_GROUPS) == 16 and len(TOXIGEN_ORIGINAL_GROUPS) == 14
    assert "bisexual" not in TOXIGEN_ORIGINAL_GROUPS and "immigrant" not in TOXIGEN_ORIGINAL_GROUPS
    prompts = load_toxigen(tmp_path, groups=CorporaConfig().toxigen_groups, per_group=2)
    assert sorted({p.group for p in prompts}) == sorted(TOXIGEN_ORIGINAL_GROUPS) and len(prompts) == 28
    with pytest.raises(ConfigError, match="data.corpora.toxic.path"):  # composes; only the corpora are missing
        JobConfig.from_dict(compose_job("data=paper"))
    assert compose_job("data=paper")["data"]["corpora"]["toxigen_groups"] == list(TOXIGEN_ORIGINAL_GROUPS)
