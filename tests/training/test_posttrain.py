import math

import pytest
import torch
from helpers import CORPUS, tiny_model, tiny_tokenizer

from detox.core.models import load_model
from detox.core.schema import ConfigError
from detox.core.tokens import EOS
from detox.evaluation.evaluate import ce_loss
from detox.training.posttrain import (
    DpoConfig,
    SftConfig,
    dpo,
    dpo_loss,
    sequence_logps,
    sft,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random model saved as pre-training exports one."""
    path = tmp_path_factory.mktemp("model") / "hf"
    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


PAIRS = [(" the cat", " sat on the mat", " is a rude goblin"), (" what a", " lovely day", " rude goblin"),
         (" the dog", " ran in the park", " is rude and loud"), (" you are", " a cat in the sun", " a rude goblin")]


def test_dpo_loss_by_hand():
    policy_chosen, policy_rejected = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    ref_chosen, ref_rejected = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -2.5])
    loss, chosen_rewards, rejected_rewards = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, 0.5)
    # pair 1: 0.5 * ((-3 + 3.5) - (-4 + 3)) = 0.75; pair 2: 0.5 * ((-5 + 4) - (-2 + 2.5)) = -0.75
    expected = (math.log(1 + math.exp(-0.75)) + math.log(1 + math.exp(0.75))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(chosen_rewards, torch.tensor([0.25, -0.5]))
    torch.testing.assert_close(rejected_rewards, torch.tensor([-0.5, 0.25]))


def test_dpo_loss_matches_trl(tmp_path):
    import datasets
    import trl  # a test extra, imported here because it takes seconds
    tokenizer = tiny_tokenizer()
    policy, reference = tiny_model(tokenizer, 0), tiny_model(tokenizer, 1)
    rows = [{"prompt": EOS + p, "chosen": c, "rejected": r} for p, c, r in PAIRS]
    args = trl.DPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, save_strategy="no", beta=0.3,
                         per_device_train_batch_size=len(PAIRS))
    trainer = trl.DPOTrainer(model=policy, ref_model=reference, args=args,
                             train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer)
    with torch.no_grad():
        expected = trainer.compute_loss(trainer.model, next(iter(trainer.get_train_dataloader())))
        # trl ends every completion with end-of-document; score the same continuations
        prompts = [p for p, _, _ in PAIRS] * 2
        continuations = [c + EOS for _, c, _ in PAIRS] + [r + EOS for _, _, r in PAIRS]
        policy_logps = sequence_logps(policy, tokenizer, prompts, continuations)
        ref_logps = sequence_logps(reference, tokenizer, prompts, continuations)
    n = len(PAIRS)
    loss, _, _ = dpo_loss(policy_logps[:n], policy_logps[n:], ref_logps[:n], ref_logps[n:], 0.3)
    assert abs(expected.item() - math.log(2)) > 0.01  # two different models: not the trivial log 2
    assert loss.item() == pytest.approx(expected.item(), abs=2e-6)


def test_sequence_logps_matches_a_per_token_loop():
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    prompts, continuations = [" the cat", " what a lovely", ""], [" sat on the mat", " day", " rude goblin"]
    with torch.no_grad():
        got = sequence_logps(model, tokenizer, prompts, continuations)
        for prompt, continuation, value in zip(prompts, continuations, got):
            context = tokenizer(EOS + prompt, add_special_tokens=False)["input_ids"]
            total = 0.0
            for token in tokenizer(continuation, add_special_tokens=False)["input_ids"]:
                logits = model(torch.tensor([context])).logits[0, -1]
                total += torch.log_softmax(logits.double(), -1)[token].item()
                context = context + [token]
            assert value.item() == pytest.approx(total, abs=1e-4)


def test_sft_lowers_the_loss_on_its_data_and_the_saved_model_reloads(tmp_path, model_dir):
    texts = CORPUS[:4]
    cfg = SftConfig(steps=25, lr=1e-2, batch_size=2, max_docs=4, max_tokens=64)
    metrics = sft(model_dir, texts, cfg, seed=1, out=tmp_path)
    assert metrics["sft_steps"] == 25 and metrics["sft_docs"] == 4
    assert metrics["sft_final_loss"] < metrics["sft_initial_loss"] - 1.0
    before, tokenizer = load_model(model_dir)
    after, _ = load_model(tmp_path / "hf")
    # the evaluation stage's CE loss on the same documents: the same objective, computed independently
    assert ce_loss(before, tokenizer, texts, 4, seq_len=64) == pytest.approx(metrics["sft_initial_loss"], rel=1e-5)
    assert ce_loss(after, tokenizer, texts, 4, seq_len=64) == pytest.approx(metrics["sft_final_loss"], rel=1e-5)


def test_dpo_raises_the_margin_of_its_pairs(tmp_path, model_dir):
    cfg = DpoConfig(beta=0.5, steps=15, lr=3e-3, batch_size=2)
    metrics = dpo(model_dir, PAIRS, cfg, seed=1, out=tmp_path)
    # at the start the policy is the reference: zero rewards, loss log 2
    assert metrics["dpo_initial_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["dpo_initial_reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["dpo_final_reward_margin"] > 1.0 and metrics["dpo_final_reward_accuracy"] == 1.0
    assert metrics["dpo_final_loss"] < math.log(2) - 0.3
    reference, tokenizer = load_model(model_dir)
    policy, _ = load_model(tmp_path / "hf")
    prompts = [p for p, _, _ in PAIRS] * 2
    continuations = [c for _, c, _ in PAIRS] + [r for _, _, r in PAIRS]
    with torch.no_grad():
        delta = sequence_logps(policy, tokenizer, prompts, continuations) - \
            sequence_logps(reference, tokenizer, prompts, continuations)
    n = len(PAIRS)
    margin = (cfg.beta * (delta[:n] - delta[n:])).mean().item()
    assert margin == pytest.approx(metrics["dpo_final_reward_margin"], rel=1e-4)


@pytest.mark.parametrize("call, culprit", [
    (lambda out: sft(out / "absent", CORPUS, SftConfig(steps=0), 1, out), "method.steps=0"),
    (lambda out: sft(out / "absent", CORPUS, SftConfig(lr=0.0), 1, out), "method.lr=0"),
    (lambda out: sft(out / "absent", [], SftConfig(), 1, out), "no texts"),
    (lambda out: dpo(out / "absent", PAIRS, DpoConfig(beta=0.0), 1, out), "method.beta=0"),
    (lambda out: dpo(out / "absent", PAIRS, DpoConfig(steps=-1), 1, out), "method.steps=-1"),
    (lambda out: dpo(out / "absent", [], DpoConfig(), 1, out), "preference set is empty"),
    (lambda out: dpo(out / "absent", [(" a", "", " b")], DpoConfig(), 1, out), "pair 0"),
])
def test_bad_input_is_refused_before_loading_the_model(tmp_path, call, culprit):
    with pytest.raises(ConfigError, match=culprit):
        call(tmp_path)
