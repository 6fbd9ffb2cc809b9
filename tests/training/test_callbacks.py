"""The pre-training options that change how it trains: trainer.document_mask and trainer.ema_decay."""

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from detox.core.models import ai2_to_hf_olmo
from detox.core.schema import ConfigError
from detox.training.config import ModelConfig, TrainerConfig
from detox.training.pretrain import pretrain
from detox.training.pretrain.model import document_attention_bias

EOS = 0
SEQ_LEN = 32
TINY = ModelConfig(d_model=16, n_heads=2, n_layers=2)


def run(mixture, out, callbacks=(), **changes):
    cfg = TrainerConfig(**{**dict(epochs=2, global_batch_tokens=8 * SEQ_LEN, micro_batch_size=8, checkpoint_every=3,
                                  num_threads=1), **changes})
    return pretrain(TINY, cfg, SEQ_LEN, 7, mixture / "mixture", mixture / "tokenizer", out, callbacks=callbacks)


def test_document_bias_lets_a_token_see_only_its_own_document():
    ids = torch.tensor([[5, EOS, 6, 7, EOS, 8]])  # a cut-off document, then two whole ones, each opened by EOS
    allowed = document_attention_bias(ids, EOS)[0, 0] == 0
    expected = torch.tensor([[1, 0, 0, 0, 0, 0],
                             [0, 1, 0, 0, 0, 0],
                             [0, 1, 1, 0, 0, 0],
                             [0, 1, 1, 1, 0, 0],
                             [0, 0, 0, 0, 1, 0],
                             [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(allowed, expected)


class DocumentLogits(L.Callback):
    """When training ends: the logits the training step computes for one document opening a window and
    for the same document after another one (from the final layer norm's output, the tied embedding)."""

    def on_train_end(self, trainer, module):
        eos = module.model.config.eos_token_id
        self.eos = eos
        first, second, rest = [eos, 3, 4, 5, 6], [eos, 7, 8, 9], [eos] + [10] * SEQ_LEN
        after = torch.tensor([(first + second + rest)[:SEQ_LEN + 1]])
        alone = torch.tensor([(second + rest)[:SEQ_LEN + 1]])
        states = []
        hook = module.model.transformer.ln_f.register_forward_hook(lambda m, args, out: states.append(out))
        with torch.no_grad():
            self.logits = {}
            for masked in (True, False):
                module.optim.document_mask = masked
                states.clear()
                module.training_step(after, 0)
                module.training_step(alone, 0)
                weight = module.model.transformer.wte.weight
                self.logits[masked] = (states[0][0, len(first):len(first) + len(second)] @ weight.T,
                                       states[1][0, :len(second)] @ weight.T)
            module.optim.document_mask = True
        hook.remove()
        module.step_losses.clear()


def test_with_document_mask_a_document_trains_the_same_after_others_as_alone(tmp_path, mixture):
    """What the evaluation sees (EOS, then one document) is what training computes for every document of a
    packed window: through the training forward, a document's logits after another equal its logits alone."""
    probe = DocumentLogits()
    run(mixture, tmp_path, callbacks=[probe], epochs=0.5, document_mask=True)
    after, alone = probe.logits[True]
    assert alone.std() > 0.01  # a real comparison
    torch.testing.assert_close(after, alone, atol=1e-5, rtol=1e-5)
    after, alone = probe.logits[False]
    assert not torch.allclose(after, alone, atol=1e-3)  # without the mask the first document leaks in


class StepWeights(L.Callback):
    """The training weights after every optimiser step, and the model's weights when training ends."""

    def __init__(self):
        self.steps, self.final = {}, None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps[trainer.global_step] = {k: v.clone() for k, v in module.model.state_dict().items()}

    def on_train_end(self, trainer, module):  # after WeightEMA's (callbacks run in list order)
        self.final = {k: v.clone() for k, v in module.model.state_dict().items()}
        self.config = module.model.config.asdict()


def test_ema_exports_the_moving_average_of_the_step_weights(tmp_path, mixture):
    decay = 0.7
    record = StepWeights()
    metrics = run(mixture, tmp_path, callbacks=[record], epochs=0.2, ema_decay=decay)
    steps = [record.steps[s] for s in sorted(record.steps)]
    assert metrics["pretrain_steps"] == len(steps) == 3
    average = steps[0]  # the average starts at the first step's weights
    for weights in steps[1:]:
        average = {k: decay * average[k] + (1 - decay) * weights[k] for k in average}
    assert not torch.allclose(average["transformer.wte.weight"], steps[-1]["transformer.wte.weight"])
    for k, v in average.items():
        torch.testing.assert_close(record.final[k], v, rtol=1e-6, atol=1e-7)
    expected = ai2_to_hf_olmo(record.config, record.final).state_dict()
    exported = load_file(tmp_path / "hf" / "model.safetensors")
    assert all(torch.equal(exported[k], expected[k]) for k in exported)


class Killed(Exception):
    pass


class Kill(L.Callback):
    """Stands in for a killed job: dies at the start of optimiser step 4 (the checkpoint of step 3 stays)."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 4:
            raise Killed()


def test_a_killed_ema_run_resumes_to_the_same_average(tmp_path, mixture):
    run(mixture, tmp_path / "whole", epochs=0.5, ema_decay=0.7)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run(mixture, out, callbacks=[Kill()], epochs=0.5, ema_decay=0.7)
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "hf").exists()
    assert run(mixture, out, epochs=0.5, ema_decay=0.7)["pretrain_resumed_from_step"] == 3
    whole, resumed = (load_file(path / "hf" / "model.safetensors") for path in (tmp_path / "whole", out))
    assert all(torch.equal(resumed[k], v) for k, v in whole.items())


def test_the_options_enter_the_cache_key_only_when_on():
    default = TrainerConfig().result_spec()
    assert "document_mask" not in default and "ema_decay" not in default
    assert TrainerConfig(document_mask=True).result_spec() == {**default, "document_mask": True}
    assert TrainerConfig(ema_decay=0.98).result_spec() == {**default, "ema_decay": 0.98}


def test_ema_with_fsdp_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^trainer.ema_decay=0.98 needs unsharded weights: .*strategy=fsdp"):
        TrainerConfig(strategy="fsdp", devices=2, micro_batch_size=16, ema_decay=0.98).check(128)
