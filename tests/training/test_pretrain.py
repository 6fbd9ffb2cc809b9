import json
import math
import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from olmo.model import OLMo
from safetensors.torch import load_file

from detox.core.artifacts import HISTORIES, LOSS_CURVE
from detox.core.schedule import BatchLayout
from detox.core.schema import ConfigError
from detox.core.shards import open_mixture
from detox.training.config import ModelConfig, TrainerConfig
from detox.training.pretrain import (
    check_trainer,
    checkpoint_step,
    export_hf,
    flops_per_token,
    olmo_config,
    peak_flops,
    pretrain,
)
from detox.training.pretrain.loader import (
    ResumableBatchSampler,
    ResumableLoader,
    TokenWindows,
)

SEQ_LEN = 32


TINY = ModelConfig(d_model=16, n_heads=2, n_layers=2)


def trainer(**changes):
    return TrainerConfig(**{**dict(epochs=2, global_batch_tokens=8 * SEQ_LEN, micro_batch_size=8, checkpoint_every=3,
                                   num_threads=1), **changes})


def run(mixture, out, seed=7, callbacks=(), **changes):
    return pretrain(TINY, trainer(**changes), SEQ_LEN, seed, mixture / "mixture", mixture / "tokenizer", out,
                    callbacks=callbacks)


def weights(out):
    return load_file(out / "hf" / "model.safetensors")


def test_export_gives_identical_logits(tmp_path, mixture):
    torch.manual_seed(0)
    olmo = OLMo(olmo_config(TINY, vocab_size=300, eos_id=0, pad_id=1, seq_len=32)).eval()
    hf = export_hf(olmo, mixture / "tokenizer", tmp_path / "hf").eval()
    tokens = torch.randint(0, 300, (3, 20))
    with torch.no_grad():
        expected, got = olmo(tokens).logits, hf(tokens).logits
    assert expected.std() > 0.01  # a real, non-degenerate comparison
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def bare_loop(mixture, seed: int, cfg: TrainerConfig):
    """An independent plain-PyTorch reference of the documented training: seeded init, every epoch the
    permutation of default_rng([seed, epoch]) cut into global batches (remainder dropped), gradient
    accumulation over micro-batches, clipping, AdamW, linear warm-up then cosine decay to 10 %."""
    from detox.core.tokens import EOS, PAD, load_tokenizer

    tokenizer = load_tokenizer(mixture / "tokenizer")
    L.seed_everything(seed, verbose=False)
    model = OLMo(olmo_config(TINY, tokenizer.get_vocab_size(), tokenizer.token_to_id(EOS), tokenizer.token_to_id(PAD),
                             SEQ_LEN))
    tokens = open_mixture(mixture / "mixture")[:].astype(np.int64)
    n = (len(tokens) - 1) // SEQ_LEN
    windows = torch.stack([torch.from_numpy(tokens[i * SEQ_LEN:(i + 1) * SEQ_LEN + 1]) for i in range(n)])
    batch = cfg.global_batch_tokens // SEQ_LEN
    steps_per_epoch = n // batch
    total = math.ceil(cfg.epochs * steps_per_epoch)
    warmup = max(1, round(cfg.warmup_fraction * total))
    embedding = model.transformer.wte.weight  # no decay on it (the norms have no parameters)
    optimizer = torch.optim.AdamW([{"params": [p for p in model.parameters() if p is not embedding]},
                                   {"params": [embedding], "weight_decay": 0.0}],
                                  lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    losses, lrs = [], []
    for step in range(total):
        epoch, k = divmod(step, steps_per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n)[k * batch:(k + 1) * batch]
        lr = cfg.lr * ((step + 1) / warmup if step < warmup else
                       0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup)))))
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for micro in np.split(order, batch // cfg.micro_batch_size):
            x = windows[micro]
            loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).logits.flatten(0, 1), x[:, 1:].flatten())
            (loss / (batch // cfg.micro_batch_size)).backward()
            step_loss += loss.item() / (batch // cfg.micro_batch_size)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(step_loss)
        lrs.append(lr)
    return model, losses, lrs


def test_training_matches_a_bare_pytorch_loop_with_accumulation(tmp_path, mixture):
    cfg = trainer(micro_batch_size=2, epochs=1.5)  # 4 micro-batches per optimiser step
    metrics = run(mixture, tmp_path, **vars(cfg))
    model, losses, lrs = bare_loop(mixture, 7, cfg)
    curve = json.loads((tmp_path / LOSS_CURVE).read_text())
    histories = json.loads((tmp_path / HISTORIES).read_text())
    assert [s for s, _ in curve] == list(range(1, len(losses) + 1)) and metrics["pretrain_steps"] == len(losses)
    np.testing.assert_allclose([v for _, v in curve], losses, rtol=1e-5)
    np.testing.assert_allclose([v for _, v in histories["pretrain_lr"]], lrs, rtol=1e-6)
    assert all(v > 0 for _, v in histories["pretrain_tokens_per_s"]) and "pretrain_mfu" not in histories
    assert metrics["pretrain_gradient_accumulation"] == 4
    assert metrics["pretrain_tokens_seen"] == len(losses) * 8 * SEQ_LEN
    got = weights(tmp_path)
    torch.testing.assert_close(got["model.embed_tokens.weight"], model.transformer.wte.weight.detach(),
                               rtol=1e-4, atol=1e-5)
    assert curve[-1][1] < curve[0][1] - 1.0  # it learns
    assert not (tmp_path / "checkpoints").exists()


def test_a_seed_fixes_the_run_and_micro_batching_does_not_change_it(tmp_path, mixture):
    a, b, c = (run(mixture, tmp_path / name, micro_batch_size=size) for name, size in (("a", 8), ("b", 8), ("c", 4)))
    assert a["pretrain_final_loss"] == b["pretrain_final_loss"]
    assert all(torch.equal(weights(tmp_path / "a")[k], v) for k, v in weights(tmp_path / "b").items())
    for key, value in weights(tmp_path / "c").items():
        torch.testing.assert_close(value, weights(tmp_path / "a")[key], rtol=1e-4, atol=1e-5)


class Killed(Exception):
    pass


class Kill(L.Callback):
    """Stands in for a killed job: dies at the start of optimiser step `step`, mid-epoch."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Killed()


@pytest.fixture(scope="module")
def whole(mixture, tmp_path_factory):
    """An uninterrupted run (13 steps, checkpoints every 3) that the resumed ones must equal bitwise."""
    out = tmp_path_factory.mktemp("whole")
    run(mixture, out, micro_batch_size=4)
    return out


def assert_resumed_is_whole(out, whole):
    curve = json.loads((out / LOSS_CURVE).read_text())
    assert curve[0][0] == 7  # training went on from step 6, not from step 0
    expected, resumed = weights(whole), weights(out)
    assert expected.keys() == resumed.keys() and all(torch.equal(resumed[k], v) for k, v in expected.items())
    assert json.loads((whole / LOSS_CURVE).read_text())[6:] == curve


def test_killed_run_resumes_to_the_same_weights(tmp_path, mixture, whole):
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run(mixture, out, callbacks=[Kill(7)], micro_batch_size=4)
    last = out / "checkpoints" / "last.ckpt"
    assert last.is_symlink() and last.is_file() and not (out / "hf").exists()
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "step-000006.ckpt"]  # step 3's removed
    metrics = run(mixture, out, micro_batch_size=4)
    assert metrics["pretrain_resumed_from_step"] == 6  # the last checkpoint before the kill, mid-epoch (13 steps)
    assert_resumed_is_whole(out, whole)


class Listing(L.Callback):
    """A folder's entries when training (re)starts."""

    def __init__(self, folder: Path):
        self.folder, self.names = folder, []

    def on_train_start(self, trainer, module):
        self.names = sorted(p.name for p in self.folder.iterdir())


def test_a_save_killed_half_way_leaves_the_previous_checkpoint_last_and_resumes_exactly(
        tmp_path, mixture, whole, monkeypatch):
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    save = TorchCheckpointIO.save_checkpoint

    def save_half_then_die(self, checkpoint, path, storage_options=None):
        save(self, checkpoint, path, storage_options)
        if Path(path).name == "step-000009.ckpt":  # the third save: cut it short, as a kill would
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            raise Killed()

    out = tmp_path / "killed"
    with monkeypatch.context() as patch:
        patch.setattr(TorchCheckpointIO, "save_checkpoint", save_half_then_die)
        with pytest.raises(Killed):
            run(mixture, out, micro_batch_size=4)
    checkpoints = out / "checkpoints"
    assert os.readlink(checkpoints / "last.ckpt") == "step-000006.ckpt"  # the previous save, whole
    assert checkpoint_step(checkpoints / "last.ckpt") == 6
    with pytest.raises(Exception):
        torch.load(checkpoints / "step-000009.ckpt", weights_only=True)  # the half-written one
    listing = Listing(checkpoints)
    metrics = run(mixture, out, micro_batch_size=4, callbacks=[listing])
    assert listing.names == ["last.ckpt", "step-000006.ckpt"]  # the incomplete save removed before training
    assert metrics["pretrain_resumed_from_step"] == 6
    assert_resumed_is_whole(out, whole)
    assert not checkpoints.exists()


class DeterministicFlag(L.Callback):
    """torch's deterministic-algorithms switch while the trainer trains."""

    def on_train_start(self, trainer, module):
        self.during = torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("deterministic", [True, False])
def test_trainer_deterministic_switches_torch_deterministic_algorithms_for_the_run(tmp_path, mixture, deterministic):
    flag, before = DeterministicFlag(), torch.are_deterministic_algorithms_enabled()
    run(mixture, tmp_path, callbacks=[flag], deterministic=deterministic, epochs=0.2)
    assert flag.during is deterministic
    assert torch.are_deterministic_algorithms_enabled() is before  # restored for the stages after pre-training


def test_deterministic_is_on_for_cpus_off_for_gpus_and_not_in_the_cache_key(tmp_path, monkeypatch):
    from helpers import compose_job

    from detox.job import JobConfig

    for preset, expected in (("cpu", True), ("gpu", False), ("ddp", False), ("fsdp", False)):
        assert JobConfig.from_dict(compose_job(f"trainer={preset}")).trainer.deterministic is expected, preset
    assert TrainerConfig().deterministic and "deterministic" not in TrainerConfig().result_spec()
    assert TrainerConfig(deterministic=False).result_spec() == TrainerConfig().result_spec()  # same cache key
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")  # unset now, and again after the test
    too_many = trainer(accelerator="gpu", devices=torch.cuda.device_count() + 1, strategy="ddp", deterministic=True)
    with pytest.raises(ConfigError, match="GPU"):
        pretrain(TINY, too_many, SEQ_LEN, 1, tmp_path, tmp_path, tmp_path)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # set before anything could touch CUDA


def test_sampler_shards_each_global_batch_whatever_the_device_count():
    n, seed = 50, 3
    for epoch in (0, 1):
        reference = np.random.default_rng([seed, epoch]).permutation(n)
        for ranks, size in ((1, 12), (2, 3), (4, 1)):
            layout = BatchLayout(seq_len=4, global_sequences=12, micro_batch_size=size, ranks=ranks)
            per_rank = []
            for rank in range(ranks):
                sampler = ResumableBatchSampler(n, layout, rank, seed)
                sampler.set_epoch(epoch)
                per_rank.append(list(sampler))
                assert len(per_rank[-1]) == len(sampler) == 4 * 12 // (ranks * size)
            steps = [sorted(i for r in per_rank for b in r[s * len(r) // 4:(s + 1) * len(r) // 4] for i in b)
                     for s in range(4)]
            assert steps == [sorted(reference[s * 12:(s + 1) * 12]) for s in range(4)]  # 2 windows dropped


def test_sampler_resumes_mid_epoch_and_after_the_last_batch():
    layout = BatchLayout(seq_len=4, global_sequences=4, micro_batch_size=2, ranks=1)
    whole = ResumableBatchSampler(10, layout, 0, seed=1)
    whole.set_epoch(1)
    expected = list(whole)
    resumed = ResumableBatchSampler(10, layout, 0, seed=1)
    resumed.load_state_dict({"epoch": 1, "trained": 2})
    assert list(resumed) == expected[2:]
    resumed.load_state_dict({"epoch": 0, "trained": len(resumed)})  # saved at the end of epoch 0
    assert list(resumed) == expected


@pytest.mark.parametrize("changes, message", [
    (dict(devices=(os.cpu_count() or 1) + 1, strategy="ddp"), r"trainer.devices=\d+: this machine has"),
    (dict(global_batch_tokens=100), r"global_batch_tokens=100 is not a multiple of .* = 256"),
    (dict(devices=2), r"needs trainer.strategy=ddp or fsdp"),
    (dict(hsdp=True), r"trainer.hsdp=true shards within a node .* needs trainer.strategy=fsdp, not auto"),
])
def test_bad_trainer_settings_fail_before_any_work(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        check_trainer(trainer(**changes), TINY, SEQ_LEN)
    with pytest.raises(ConfigError, match=message):  # pretrain checks first: the mixture path does not exist
        pretrain(TINY, trainer(**changes), SEQ_LEN, 1, tmp_path / "none", tmp_path / "none", tmp_path / "out")


def test_gpu_flops_accounting():
    # OLMo-1B: 1.18e9 parameters; 6N + 12 * 16 layers * 2048 * 2048 context per token
    one_b = ModelConfig(d_model=2048, n_heads=16, n_layers=16, mlp_ratio=8)
    assert flops_per_token(1_176_764_416, one_b, 2048) == 6 * 1_176_764_416 + 12 * 16 * 2048 * 2048
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12 and peak_flops("Tesla T4") is None


def test_a_mixture_smaller_than_one_global_batch_is_refused(tmp_path, mixture):
    with pytest.raises(ValueError, match="fewer than one global batch"):
        run(mixture, tmp_path, global_batch_tokens=1000 * SEQ_LEN)


def test_nan_loss_stops_with_a_clear_error(tmp_path, mixture):
    with pytest.raises(FloatingPointError, match="pre-training loss is nan"):
        run(mixture, tmp_path / "x", lr=float("inf"))


def test_a_nan_read_only_every_few_steps_still_stops_the_run_before_any_checkpoint(tmp_path, mixture):
    with pytest.raises(FloatingPointError, match="pre-training loss is nan at step 2;"):  # the first one, named
        run(mixture, tmp_path, lr=float("inf"), log_every=5)  # read at step 3, a checkpoint step
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_losses_read_every_few_steps_change_nothing_else(tmp_path, mixture, whole):
    run(mixture, tmp_path, micro_batch_size=4, log_every=4, loader_workers=2)  # workers: GPUs only
    assert json.loads((tmp_path / LOSS_CURVE).read_text()) == json.loads((whole / LOSS_CURVE).read_text())
    assert all(torch.equal(weights(tmp_path)[k], v) for k, v in weights(whole).items())
    steps = [s for s, _ in json.loads((tmp_path / HISTORIES).read_text())["pretrain_tokens_per_s"]]
    assert steps == [s for s, _ in json.loads((whole / LOSS_CURVE).read_text())]  # every step, with its window's rate


def test_loader_workers_yield_the_same_micro_batches():
    """What trainer.loader_workers does on GPUs: the same batches, in the same order, from worker processes."""
    windows = TokenWindows(np.arange(2000, dtype=np.uint16), seq_len=8)
    layout = BatchLayout(seq_len=8, global_sequences=8, micro_batch_size=4, ranks=1)

    def batches(workers):
        sampler = ResumableBatchSampler(len(windows), layout, 0, seed=3)
        return list(ResumableLoader(windows, batch_sampler=sampler, num_workers=workers))

    inline, parallel = batches(0), batches(2)
    assert len(inline) == len(parallel) > 10
    assert all(torch.equal(x, y) for x, y in zip(inline, parallel))


@pytest.mark.parametrize("name, nominal", [("olmo20m", 20e6), ("olmo60m", 60e6), ("olmo150m", 150e6),
                                           ("olmo300m", 300e6), ("olmo750m", 750e6), ("olmo1b", 1.2e9)])
def test_size_sweep_models_have_their_nominal_size(name, nominal):
    from helpers import compose_job

    from detox.job import JobConfig

    cfg = JobConfig.from_dict(compose_job(f"model={name}")).model
    assert cfg.name == name
    config = olmo_config(cfg, vocab_size=50280, eos_id=0, pad_id=1, seq_len=2048)
    config.init_device = "meta"  # shapes only, no memory
    olmo = OLMo(config)
    n = sum(p.numel() for p in olmo.parameters())
    d, layers = cfg.d_model, cfg.n_layers  # independent count: 4 d^2 attention + 12 d^2 SwiGLU MLP per layer
    assert n == layers * 16 * d * d + 50304 * d
    assert 0.8 < n / nominal < 1.15
