"""MPLMM: the released network's size, the prompts chosen by the missing type, the recipe, on
synthetic data (fidelity to the released module: docs/methods/mplmm.md)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import imsa
from imsa.batch import tensor_cache
from imsa.errors import ConfigError
from imsa.methods import create_method
from imsa.methods.mplmm import MPLMMConfig, MPLMMNet, fine_tuning_masks, mult_network
from imsa.methods.spec import DataSpec
from imsa.missing import fixed_conditions
from imsa.testing import text_and_audio

TINY = {"dim": 8, "heads": 2, "depth": 1, "prompt_length": 2}


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_of_the_released_mosi_setting():
    # The released PromptModel at MOSI's MulT pickle (300-d GloVe text, 5-d audio, 20-d video, 50 steps each)
    # and main.py's defaults has 1,149,421 parameters, of which fine-tuning trains 88,141; its MULTModel
    # (pretraining) 1,071,211. imsa's networks have the same tensors (the fidelity check copies every one).
    spec = DataSpec(
        modalities=("l", "a", "v"),
        dims={"l": 300, "a": 5, "v": 20},
        sequence=dict.fromkeys("lav", True),
        task="regression",
        output_dim=1,
        steps=dict.fromkeys("lav", 50),
    )
    net = MPLMMNet(spec, MPLMMConfig())
    assert count(net) == 1_149_421
    assert count(net) - sum(p.numel() for p in net.frozen_backbone()) == 88_141
    assert count(mult_network(spec, MPLMMConfig())) == 1_071_211
    assert set(net.generators) == {"l_from_a", "l_from_v", "l_from_av", "a_from_l", "a_from_v", "a_from_lv", "v_from_l", "v_from_a", "v_from_la"}
    assert net.generators["l_from_av"][0].in_channels == 16 + 50 + 50 and net.type_matrices["l"].shape == (50, 60)


@pytest.fixture(scope="module")
def sequences():
    data = imsa.load_dataset("synthetic", sequence_length=5, aligned=True, num_videos=8)
    return data, tensor_cache(data).gather(np.arange(14))


def tiny(data, **config) -> MPLMMNet:
    torch.manual_seed(0)
    return MPLMMNet(DataSpec.of(data), MPLMMConfig(**{**TINY, "prompt_init_std": 0.5, **config})).eval()


def every_condition(batch):
    """The batch's rows cycling through the seven missing types."""
    conditions = fixed_conditions(batch.modalities)
    present = torch.stack([torch.as_tensor(conditions[i % len(conditions)].mask(batch.modalities)) for i in range(len(batch))])
    return batch.with_present(present)


def test_the_prompts_are_chosen_per_missing_type_from_present(sequences):
    data, batch = sequences
    net = tiny(data)
    batch = every_condition(batch)
    present = batch.present
    tokens = net.missing_type_tokens(present)  # (M, B, P, 2 dim)
    for row in range(len(batch)):
        matrix = sum(net.signal_prompts[m][int(present[row, k])] @ net.type_matrices[m] for k, m in enumerate("lav"))
        torch.testing.assert_close(tokens[:, row], net.type_prompts @ matrix)
    same = (present[:, None] == present[None]).all(-1)
    distinct = (tokens.flatten(2)[:, :, None] - tokens.flatten(2)[:, None]).abs().amax((0, 3)) > 0
    assert torch.equal(distinct, ~same)  # one set of tokens per missing type
    # the generator of "l missing, a and v present" reaches exactly those rows, and the text's
    # missing-signal prompt the rows without text
    with torch.no_grad():
        before = net.sequences(batch)
        net.generators["l_from_av"][0].bias += 1.0
        net.signal_prompts["a"][0] += 1.0
        after = net.sequences(batch)
    changed_l = (after["l"] - before["l"]).abs().amax((1, 2)) > 0
    changed_a = (after["a"] - before["a"]).abs().amax((1, 2)) > 0
    assert torch.equal(changed_l, (present == torch.tensor([False, True, True])).all(1))
    assert torch.equal(changed_a, ~present[:, 1])
    assert torch.equal((after["v"] - before["v"]).abs().amax((1, 2)) > 0, torch.zeros(len(batch), dtype=torch.bool))


def test_a_missing_modality_enters_as_zeros_whatever_its_values(sequences):
    data, batch = sequences
    net = tiny(data)
    generator = torch.Generator().manual_seed(0)
    for k, missing in enumerate(data.modalities):
        present = torch.ones_like(batch.present)
        present[:7, k] = False
        masked = batch.with_present(present)
        noise, zero = masked.inputs[missing].clone(), masked.inputs[missing].clone()
        noise[:7] = 1e3 * torch.randn(noise[:7].shape, generator=generator)
        zero[:7] = 0.0
        noisy, zeros = (dataclasses.replace(masked, inputs={**masked.inputs, missing: x}) for x in (noise, zero))
        with torch.no_grad():
            out, on_zeros, complete = net(noisy), net(zeros).prediction, net(batch).prediction
        torch.testing.assert_close(out.prediction, on_zeros)
        assert not torch.allclose(out.prediction[:7], complete[:7])
        torch.testing.assert_close(out.prediction[7:], complete[7:])  # each row's own type


def test_released_zero_prompts_leave_the_missing_type_prompts_untrained(sequences):
    data, batch = sequences
    batch = every_condition(batch)
    for std, moves in ((0.0, False), (0.5, True)):
        net = tiny(data, prompt_init_std=std).train()
        F.l1_loss(net(batch).prediction, batch.labels).backward()
        type_gradients = [net.type_prompts.grad] + [p.grad for p in net.type_matrices.values()]
        assert all(torch.isfinite(g).all() for g in type_gradients)
        assert any(g.abs().sum() > 0 for g in type_gradients) == moves
        assert net.signal_prompts["l"].grad.abs().sum() > 0 and net.generative_prompts.grad.abs().sum() > 0


def test_a_training_batch_of_one_has_finite_gradients(sequences):
    data, batch = sequences
    one = every_condition(batch).select(torch.tensor([1]))
    net = tiny(data).train()
    loss = F.l1_loss(net(one).prediction, one.labels)
    loss.backward()
    assert net(one).prediction.shape == (1,) and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_classification_and_two_modalities(sequences):
    data = imsa.load_dataset("synthetic", sequence_length=5, aligned=True, num_videos=8, num_classes=4)
    net = tiny(data)
    batch = every_condition(tensor_cache(data).gather(np.arange(9)))
    with torch.no_grad():
        assert net(batch).prediction.shape == (9, 4)
    pair = text_and_audio(sequences[0])
    net = tiny(pair)
    assert set(net.generators) == {"l_from_a", "a_from_l"} and net.type_matrices["l"].shape == (5, 8)
    with torch.no_grad():
        assert net(every_condition(tensor_cache(pair).gather(np.arange(6)))).prediction.shape == (6,)
    with pytest.raises(ConfigError, match="divisible"):
        MPLMMConfig(dim=10, heads=4)


def test_the_fine_tuning_draw_is_the_released_drop_rate():
    weights = fine_tuning_masks(("l", "a", "v"), 0.7).weights
    assert weights["l,a,v"] == pytest.approx(0.3) and all(weights[c.name] == pytest.approx(0.7 / 6) for c in fixed_conditions(("l", "a", "v"))[:-1])


def test_the_recipe_pretrains_then_tunes_prompts_on_the_frozen_trunk(monkeypatch, sequences):
    import imsa.methods.phase as phase

    seen = []
    train = phase.run_training

    def recording(model, optimizer, **kwargs):
        seen.append(dict(kwargs, optimizer=optimizer, model=model, start={k: v.clone() for k, v in model.state_dict().items()}))
        return train(model, optimizer, **kwargs)

    monkeypatch.setattr(phase, "run_training", recording)
    split = sequences[0].split(0)
    method = create_method("mplmm", **TINY, epochs=1, pretrain_epochs=1).fit(split["train"], split["valid"], seed=0)
    assert [s["phase"] for s in seen] == ["pretrain", "prompt"]
    for s in seen:
        optimizer = s["optimizer"]
        assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["weight_decay"] == 0.0
        assert (s["grad_clip"], s["clip_mode"], s["patience"], s["plateau"]) == (0.8, "norm", None, (0.1, 10))
    net = method.model_
    frozen = {id(p) for p in net.frozen_backbone()}
    trained = {id(p) for g in seen[1]["optimizer"].param_groups for p in g["params"]}
    assert trained == {id(p) for p in net.parameters()} - frozen and not any(p.requires_grad for p in net.frozen_backbone())
    pretrained, start, end = seen[0]["model"].state_dict(), seen[1]["start"], net.state_dict()  # the selected pretraining, the prompt phase's start and end
    layer = "mult.crossmodal.l_with_a.layers.0.fc1.weight"
    assert not torch.equal(seen[0]["start"]["network." + layer], pretrained["network." + layer])  # pretraining trained it
    assert torch.equal(start["backbone." + layer], pretrained["network." + layer]) and torch.equal(end["backbone." + layer], start["backbone." + layer])
    for fresh in ("mult.out.weight", "projections.convs.l.weight"):  # re-initialised, as released
        assert not torch.equal(start["backbone." + fresh], pretrained["network." + fresh])
    batch = tensor_cache(sequences[0]).gather(np.arange(6))
    net.eval()
    with torch.no_grad():  # the prompt phase's loss: L1 on the prediction (cross-entropy for classes)
        torch.testing.assert_close(seen[1]["loss"](batch, 0), F.l1_loss(net(batch).prediction, batch.labels))
    defaults = MPLMMConfig()
    assert (defaults.batch_size, defaults.epochs, defaults.pretrain_epochs, defaults.drop_rate) == (64, 40, 40, 0.7)


@pytest.mark.parametrize("protocol", ["mr", "noise"])
def test_two_epochs_under_the_protocol_write_a_model_that_predicts(tmp_path, protocol):
    data = {"sequence_length": 5, "aligned": True, "num_videos": 10}
    overrides = {**TINY, "epochs": 2, "pretrain_epochs": 2, "batch_size": 16, **{f"data.{k}": v for k, v in data.items()}}
    summary = imsa.run("mplmm", "synthetic", protocol=protocol, rate=0.3, folds=[0], out=tmp_path / "run", overrides=overrides)
    assert any(key.startswith(protocol) for key in summary["test"])
    method = imsa.load_method(tmp_path / "run" / "models" / "seed1-fold0.json")
    dataset = imsa.load_dataset("synthetic", **data)
    batch = every_condition(tensor_cache(dataset).gather(np.arange(7)))
    with torch.no_grad():
        prediction = method.model_.eval()(batch).prediction
    assert prediction.shape == (7,) and torch.isfinite(prediction).all()
