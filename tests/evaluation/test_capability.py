"""lm-evaluation-harness tasks on a loaded model (detox.evaluation.capability), offline: a local
multiple-choice task and a local rolling-perplexity task, data files and task YAMLs written here; the
harness's numbers checked against the same quantities computed by hand, with and without ITI's hooks."""

import json
import math
import re

import pytest
import torch
from helpers import compose_job, tiny_family_model, tiny_tokenizer

from detox.core.schema import ConfigError
from detox.evaluation import capability
from detox.evaluation.config import CapabilityConfig
from detox.job import JobConfig
from detox.steering import steer

QUESTIONS = [("the cat sat on the", [" mat", " goblin"], 0), ("you are a rude", [" goblin", " day"], 0),
             ("what a lovely", [" day", " dog"], 0), ("the dog ran in the", [" park", " cat"], 1)]
PASSAGES = ["the cat sat on the mat", "the goblin is rude and loud", "a cat and a dog in the sun"]


def write_tasks(folder):
    choice = folder / "choice.jsonl"
    choice.write_text("".join(json.dumps({"q": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS))
    rolling = folder / "rolling.jsonl"
    rolling.write_text("".join(json.dumps({"text": t}) + "\n" for t in PASSAGES))
    (folder / "tiny_choice.yaml").write_text(
        f"task: tiny_choice\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {choice}\n"
        "test_split: test\noutput_type: multiple_choice\ntarget_delimiter: ''\n"
        'doc_to_text: "{{q}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - {metric: acc, aggregation: mean, higher_is_better: true}\n")
    (folder / "tiny_rolling.yaml").write_text(
        f"task: tiny_rolling\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {rolling}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - {metric: word_perplexity, aggregation: weighted_perplexity, higher_is_better: false}\n")
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tokenizer = tiny_tokenizer()
    model = tiny_family_model("llama", tokenizer)
    return model, tokenizer, write_tasks(tmp_path_factory.mktemp("tasks"))


@torch.no_grad()
def logprob(model, ids: list[int], start: int) -> float:
    """Sum of log p(ids[i] | ids[:i]) over i >= start."""
    logits = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    return sum(logits[i - 1, ids[i]].item() for i in range(start, len(ids)))


def by_hand(model, tokenizer) -> tuple[float, float]:
    """The choice task's accuracy and the rolling task's word perplexity, as lm-eval defines them."""
    correct = 0
    for question, choices, answer in QUESTIONS:
        context = tokenizer.encode(question, add_special_tokens=False)
        scores = [logprob(model, context + tokenizer.encode(question + c, add_special_tokens=False)[len(context):],
                          len(context)) for c in choices]
        correct += max(range(len(choices)), key=scores.__getitem__) == answer
    total, words = 0.0, 0
    for text in PASSAGES:  # one window each (short texts), after the end-of-text token as prefix
        total += logprob(model, [tokenizer.eos_token_id] + tokenizer.encode(text, add_special_tokens=False), 1)
        words += len(re.split(r"\s+", text))
    return correct / len(QUESTIONS), math.exp(-total / words)


def test_lm_eval_numbers_match_the_model_with_and_without_the_hooks(setup, tmp_path):
    model, tokenizer, tasks = setup
    cfg = CapabilityConfig(tasks=["tiny_choice", "tiny_rolling"], include_path=str(tasks), batch_size=2)
    base = capability.run_tasks(model, tokenizer, cfg, 1, tmp_path, prefix="capability_base")
    accuracy, perplexity = by_hand(model, tokenizer)
    assert base["capability_base_tiny_choice_acc"] == pytest.approx(accuracy)
    assert base["capability_base_tiny_rolling_word_perplexity"] == pytest.approx(perplexity, rel=1e-4)
    assert set(json.loads((tmp_path / capability.RESULTS).read_text())) == {"tiny_choice", "tiny_rolling"}

    shifts = 3.0 * torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    with steer.steering(model, shifts):
        treated = capability.run_tasks(model, tokenizer, cfg, 1, tmp_path, prefix="capability")
        steered_accuracy, steered_perplexity = by_hand(model, tokenizer)
    assert treated["capability_tiny_rolling_word_perplexity"] == pytest.approx(steered_perplexity, rel=1e-4)
    assert treated["capability_tiny_choice_acc"] == pytest.approx(steered_accuracy)
    assert abs(steered_perplexity - perplexity) > 1e-3 * perplexity  # the hooks acted inside the harness


def test_metric_names_suit_mlflow():
    assert capability.metric_name("capability", "arc_easy", "acc,none") == "capability_arc_easy_acc"
    assert capability.metric_name("capability", "gsm8k", "exact_match,strict-match") == \
        "capability_gsm8k_exact_match_strict-match"
    assert capability.metric_name("capability", "arc_easy", "alias") is None


def test_an_unknown_task_is_one_line(setup, tmp_path):
    model, tokenizer, tasks = setup
    with pytest.raises(ConfigError, match=r"\['no_such_task'\] are not lm-eval tasks"):
        capability.run_tasks(model, tokenizer, CapabilityConfig(tasks=["no_such_task"], include_path=str(tasks)),
                             1, tmp_path, prefix="capability")


def test_capability_options_are_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="capability.include_path"):
        JobConfig.from_dict(compose_job(f"capability.include_path={tmp_path / 'missing'}"))
    with pytest.raises(ConfigError, match="capability.limit=0"):
        JobConfig.from_dict(compose_job("capability.limit=0"))
    assert JobConfig.from_dict(compose_job()).capability.tasks == []  # off by default


def test_the_report_shows_base_and_treated_capability_beside_ce():
    import pandas as pd

    from detox.report.capability_table import TITLE, capability_table

    runs = pd.DataFrame({
        "params.ratio": ["0"] * 3, "params.seed": ["1", "2", "1"], "params.method": ["iti", "iti", "prompting"],
        "params.strength": ["mid", "mid", "-"], "params.model": ["tiny-llama"] * 3, "params.task": ["study"] * 3,
        "params.setting": ["a", "a", "b"], "metrics.ce_loss": [2.0, 3.0, 1.0],
        "metrics.capability_base_arc_easy_acc": [0.5, 0.5, 0.5], "metrics.capability_arc_easy_acc": [0.4, 0.2, 0.5],
        "metrics.capability_arc_easy_acc_stderr": [0.1, 0.1, 0.1]})
    table = capability_table(runs)
    assert list(table.columns) == ["model", "method", "strength", "n", "CE loss", "arc_easy_acc"]
    iti = table[table["method"] == "iti"].iloc[0]
    assert (iti["n"], iti["CE loss"], iti["arc_easy_acc"]) == (2, "2.500", "0.500 -> 0.300")
    assert "compare it between treatments of one model only" in TITLE
    assert capability_table(runs.drop(columns=[c for c in runs if "capability" in c])).empty


def test_with_tasks_every_capability_option_is_in_the_identity(setup):
    import dataclasses

    from detox.pipeline import study_plan

    _, _, tasks = setup
    base = JobConfig.from_dict(compose_job("capability.tasks=[tiny_choice]", f"capability.include_path={tasks}"))
    key = study_plan(base).key
    for change in ({"tasks": ["tiny_rolling"]}, {"num_fewshot": 1}, {"limit": 3}, {"batch_size": 4}):
        changed = dataclasses.replace(base, capability=dataclasses.replace(base.capability, **change))
        assert study_plan(changed).key != key
    (tasks / "tiny_choice.yaml").write_text((tasks / "tiny_choice.yaml").read_text() + "\n# edited\n")
    assert study_plan(base).key != key  # a task file's content is part of it
