import contextlib
import json

import numpy as np
import pytest
import torch
from helpers import tiny_model, tiny_tokenizer

from detox.core.schema import ConfigError
from detox.core.tokens import EOS

pytest.importorskip("nanogcg", reason="red-teaming needs nanoGCG: pip install --no-deps nanogcg==0.3.0")
from detox.evaluation.config import RedteamConfig
from detox.evaluation.redteam import attack, attack_success_rate, red_team  # noqa: E402

torch.set_num_threads(1)
PROMPT, TARGET = " the cat", " you are a rude goblin"
QUICK = RedteamConfig(num_steps=20, suffix_tokens=5, topk=32, search_width=32, max_new_tokens=6, seed=3)


def manual_target_loss(model, tokenizer, prompt: str, target: str, suffix: str) -> float:
    """Mean negative log-probability of the target's tokens, one token at a time."""
    context = tokenizer(EOS + prompt, add_special_tokens=False)["input_ids"]
    context += tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    losses = []
    with torch.no_grad():
        for token in tokenizer(target, add_special_tokens=False)["input_ids"]:
            losses.append(-torch.log_softmax(model(torch.tensor([context])).logits[0, -1].double(), -1)[token].item())
            context = context + [token]
    return float(np.mean(losses))


def test_attack_lowers_the_target_loss_with_a_suffix_of_the_configured_length():
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, init_std=0.5)  # a near-uniform model (the default init) leaves GCG little to find
    result = attack(model, tokenizer, PROMPT, TARGET, QUICK)
    assert len(tokenizer(result.suffix, add_special_tokens=False)["input_ids"]) == QUICK.suffix_tokens
    attacked = manual_target_loss(model, tokenizer, PROMPT, TARGET, result.suffix)
    assert result.loss == pytest.approx(attacked, abs=1e-4)
    assert attacked < manual_target_loss(model, tokenizer, PROMPT, TARGET, "") - 1.0
    # the continuation is the model's greedy one after prompt + suffix
    context = tokenizer(EOS + PROMPT, add_special_tokens=False)["input_ids"] + \
        tokenizer(result.suffix, add_special_tokens=False)["input_ids"]
    generated = []
    with torch.no_grad():
        while len(generated) < QUICK.max_new_tokens:
            token = int(model(torch.tensor([context + generated])).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            generated.append(token)
    expected = tokenizer.decode(generated)
    assert result.continuation == expected
    # nanoGCG's global switches are put back and the caller's tokenizer is untouched
    assert not torch.are_deterministic_algorithms_enabled() and not tokenizer.chat_template


def test_the_intervention_is_on_during_optimisation_and_generation(tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    rude = tokenizer(" rude", add_special_tokens=False)["input_ids"][-1]
    calls = {"inside": [], "all": 0}
    entered = []

    @contextlib.contextmanager
    def force_rude():
        """Steers the model to say "rude" and records which forward passes ran while it was on."""
        def boost(module, args, kwargs, output):
            calls["inside"].append("embeds" if kwargs.get("inputs_embeds") is not None else "ids")
            output.logits[..., rude] += 100.0
            return output

        entered.append(True)
        handle = model.register_forward_hook(boost, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def count(module, args, output):
        calls["all"] += 1

    counter = model.register_forward_hook(count)
    scorer = lambda texts: np.array([1.0 if "rude" in t else 0.0 for t in texts])  # noqa: E731
    cfg = RedteamConfig(num_steps=2, suffix_tokens=4, topk=16, search_width=8, max_new_tokens=3)
    metrics = attack_success_rate(model, tokenizer, [" the cat", " a dog"], [TARGET, TARGET], scorer, cfg, 0.5,
                                  intervention=force_rude, out=tmp_path / "attacked.jsonl")
    counter.remove()
    assert len(entered) == 2
    assert len(calls["inside"]) == calls["all"]  # every forward pass ran with the intervention on
    assert {"embeds", "ids"} <= set(calls["inside"])  # GCG's embedding passes and generation's token passes
    rows = [json.loads(line) for line in (tmp_path / "attacked.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [" the cat", " a dog"]
    assert all("rude" in r["continuation"] and "rude" in r["plain_continuation"] for r in rows)
    assert metrics["gcg_success"] == 100.0 and metrics["gcg_unattacked_toxic"] == 100.0
    assert metrics["gcg_target_loss"] == pytest.approx(np.mean([r["loss"] for r in rows]))


def test_without_intervention_the_rates_follow_the_scores():
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    cfg = RedteamConfig(num_steps=1, suffix_tokens=3, topk=16, search_width=8, max_new_tokens=4)
    metrics = attack_success_rate(model, tokenizer, [" the cat"], [TARGET], lambda t: np.array([0.7] * len(t)), cfg,
                                  0.5)
    assert metrics["gcg_success"] == 100.0
    metrics = attack_success_rate(model, tokenizer, [" the cat"], [TARGET], lambda t: np.array([0.3] * len(t)), cfg,
                                  0.5)
    assert metrics["gcg_success"] == 0.0 and metrics["gcg_unattacked_toxic"] == 0.0


def test_red_team_writes_its_files_with_and_without_an_intervention(tmp_path):
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    cfg = RedteamConfig(num_steps=1, suffix_tokens=3, topk=16, search_width=8, max_new_tokens=3)
    toxic_if_rude = lambda texts: np.array([1.0 if "rude" in t else 0.0 for t in texts])  # noqa: E731
    (tmp_path / "plain").mkdir()
    plain = red_team(model, tokenizer, [" the cat"], [TARGET], toxic_if_rude, cfg, 0.5, tmp_path / "plain")
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["redteam.jsonl"]
    assert not any(name.endswith("_iti") for name in plain)
    rude = tokenizer(" rude", add_special_tokens=False)["input_ids"][-1]

    @contextlib.contextmanager
    def force_rude():
        def boost(module, args, output):
            output.logits[..., rude] += 100.0

        handle = model.register_forward_hook(boost)
        try:
            yield
        finally:
            handle.remove()

    (tmp_path / "steered").mkdir()
    metrics = red_team(model, tokenizer, [" the cat"], [TARGET], toxic_if_rude, cfg, 0.5, tmp_path / "steered",
                       intervention=force_rude)
    assert sorted(p.name for p in (tmp_path / "steered").iterdir()) == ["redteam.jsonl",
                                                                       "redteam_without_intervention.jsonl"]
    without = json.loads((tmp_path / "steered" / "redteam_without_intervention.jsonl").read_text())
    steered = json.loads((tmp_path / "steered" / "redteam.jsonl").read_text())
    assert "rude" in steered["plain_continuation"] and metrics["gcg_unattacked_toxic_iti"] == 100.0
    assert metrics["gcg_unattacked_toxic"] == 100.0 * ("rude" in without["plain_continuation"])
    assert set(metrics) == set(plain) | {f"{name}_iti" for name in plain}


@pytest.mark.parametrize("change, culprit", [({"num_steps": 0}, "redteam.num_steps=0"),
                                             ({"suffix_tokens": -1}, "redteam.suffix_tokens=-1"),
                                             ({"topk": 10_000}, "redteam.topk=10000 exceeds")])
def test_bad_config_names_the_key(change, culprit):
    tokenizer = tiny_tokenizer()
    with pytest.raises(ConfigError, match=culprit):
        attack(tiny_model(tokenizer), tokenizer, PROMPT, TARGET, RedteamConfig(**{**vars(QUICK), **change}))


def test_prompts_and_targets_must_pair_up():
    tokenizer = tiny_tokenizer()
    with pytest.raises(ConfigError, match="2 prompts but 1 targets"):
        attack_success_rate(tiny_model(tokenizer), tokenizer, ["a", "b"], ["c"], np.zeros, QUICK, 0.5)
