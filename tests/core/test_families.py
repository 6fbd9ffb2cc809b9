"""Every model family through one table (detox.core.families): tiny random models of each, built from
their config classes, probed, steered with hooks, baked into biases, exported and reloaded."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from detox.core import families
from detox.core.models import ai2_to_hf_olmo, load_model
from detox.core.schema import ConfigError
from detox.steering import probe, steer
from helpers import TINY_FAMILIES, tiny_family_model, tiny_tokenizer

TEXTS = ["the cat sat on the mat", "you are a rude goblin", "a dog", "what a lovely day it is"]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(ids).logits


def one_head_shift(model, layer: int, head: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifts that move only (layer, head), and that head's vector."""
    layers, heads, head_dim = families.head_shape(model)
    vector = torch.randn(head_dim, generator=torch.Generator().manual_seed(seed))
    shifts = torch.zeros(layers, heads, head_dim)
    shifts[layer, head] = vector
    return shifts.reshape(layers, heads * head_dim), vector


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_the_head_slices_land_on_the_right_parameters(name, tokenizer):
    model = tiny_family_model(name, tokenizer)
    family = families.family_of(model)
    layers, heads, head_dim = families.head_shape(model)
    assert (layers, heads) == (2, 4) and head_dim == (16 if name == "qwen3" else 8)  # qwen3: head_dim from its config
    layer, head = 1, 2
    shifts, vector = one_head_shift(model, layer, head)
    plain = probe.head_activations(model, tokenizer, TEXTS)
    with steer.steering(model, shifts):
        steered = probe.head_activations(model, tokenizer, TEXTS)  # read after the shift is added
    assert torch.allclose(steered[:, layer, head] - plain[:, layer, head], vector.expand(len(TEXTS), -1), atol=1e-5)
    others = torch.ones(layers, heads, dtype=torch.bool)
    others[layer, head] = False
    others[layer + 1:] = False  # later layers see the shift's consequences
    assert torch.equal(steered[:, others], plain[:, others])

    baked = steer.bake_into_bias(model, shifts)
    projection = family.projection(family.blocks(baked)[layer])
    original = family.projection(family.blocks(model)[layer])
    weight = family.weight(original)  # (out, in): the head's columns carry its shift
    expected = weight[:, head * head_dim:(head + 1) * head_dim] @ vector
    before = original.bias if original.bias is not None else torch.zeros_like(expected)
    assert torch.allclose(projection.bias - before, expected, atol=1e-5)


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_a_hooked_forward_equals_the_baked_bias_model(name, tokenizer, tmp_path):
    model = tiny_family_model(name, tokenizer)
    layers, heads, head_dim = families.head_shape(model)
    shifts = 0.5 * torch.randn(layers, heads * head_dim, generator=torch.Generator().manual_seed(1))
    ids = tokenizer(["the goblin is rude and loud"], return_tensors="pt")["input_ids"]
    with steer.steering(model, shifts):
        hooked = logits(model, ids)
    assert not torch.allclose(hooked, logits(model, ids), atol=1e-4)  # the shift does something
    baked = steer.bake_into_bias(model, shifts)
    assert torch.allclose(logits(baked, ids), hooked, atol=1e-5)
    if name == "olmo_ai2":  # the module pre-training trains: no transformers export of its own
        return
    if families.family_of(model).bias_switch is None and any(
            p.bias is None for p in families.family_of(model).projections(model)):
        with pytest.raises(ConfigError, match="no switch"):
            steer.export_baked(baked, tokenizer, tmp_path / "baked")
        return
    steer.export_baked(baked, tokenizer, tmp_path / "baked")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "baked").eval()
    assert torch.allclose(logits(reloaded, ids), hooked, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in TINY_FAMILIES if n != "olmo_ai2"])
def test_probing_reads_each_heads_output_at_the_last_token(name, tokenizer, tmp_path):
    """head_activations (batched, right-padded) equals each projection's input on one unpadded text, and a
    saved model of the family loads through detox.core.models with its own tokenizer."""
    tiny_family_model(name, tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, loaded_tokenizer = load_model(tmp_path, torch.device("cpu"))
    acts = probe.head_activations(model, loaded_tokenizer, TEXTS, batch_size=3)
    family = families.family_of(model)
    layers, heads, head_dim = families.head_shape(model)
    for i, text in enumerate(TEXTS):
        captured = []
        handles = [p.register_forward_pre_hook(lambda m, args: captured.append(args[0][0, -1]))
                   for p in family.projections(model)]
        ids = loaded_tokenizer(loaded_tokenizer.eos_token + text, return_tensors="pt", add_special_tokens=False)
        model(**ids)
        for handle in handles:
            handle.remove()
        assert torch.allclose(acts[i], torch.stack(captured).reshape(layers, heads, head_dim), atol=1e-5)


def test_ai2_olmo_converts_to_transformers_olmo_and_steers_alike(tokenizer):
    """ai2-olmo's module (what pre-training trains; its hub checkpoints are converted so) and its conversion
    give the same logits, unsteered and with the same shifts on attn_out and o_proj."""
    ai2 = tiny_family_model("olmo_ai2", tokenizer)
    hf = ai2_to_hf_olmo(ai2.config.asdict(), ai2.state_dict())
    assert families.family_of(hf).name == "olmo"
    ids = tokenizer(["the goblin is rude and loud"], return_tensors="pt")["input_ids"]
    vocab = len(tokenizer)
    assert torch.allclose(logits(ai2, ids)[..., :vocab], logits(hf, ids)[..., :vocab], atol=1e-5)
    shifts, _ = one_head_shift(hf, 0, 3)
    with steer.steering(ai2, shifts), steer.steering(hf, shifts):
        assert torch.allclose(logits(ai2, ids)[..., :vocab], logits(hf, ids)[..., :vocab], atol=1e-5)


def test_an_unsupported_family_is_one_line(tmp_path):
    from transformers import BertConfig

    BertConfig().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="'bert' is not supported; supported: olmo"):
        families.check_pretrained(str(tmp_path), None)


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox"])
def test_gcg_attacks_other_families_with_and_without_the_hooks(name, tokenizer):
    """nanoGCG's best loss is the target's loss after the suffix it found, on the model as the attack saw it:
    plain, or with the family's ITI hooks on (where the same suffix scores otherwise)."""
    pytest.importorskip("nanogcg")
    from detox.evaluation.config import RedteamConfig
    from detox.evaluation.redteam import attack, target_loss

    model = tiny_family_model(name, tokenizer)
    prompt, target = "the cat sat", " you rude goblin"
    cfg = RedteamConfig(num_steps=2, suffix_tokens=3, topk=16, search_width=8, max_new_tokens=3, seed=0)
    plain = attack(model, tokenizer, prompt, target, cfg)
    assert plain.loss == pytest.approx(target_loss(model, tokenizer, prompt, target, plain.suffix), rel=1e-3)
    layers, heads, head_dim = families.head_shape(model)
    with steer.steering(model, torch.ones(layers, heads * head_dim)):
        steered = attack(model, tokenizer, prompt, target, cfg)
        hooked_loss = target_loss(model, tokenizer, prompt, target, steered.suffix)
    assert steered.loss == pytest.approx(hooked_loss, rel=1e-3)
    assert abs(target_loss(model, tokenizer, prompt, target, steered.suffix) - hooked_loss) > 1e-4
