"""MMIN and GCNet's AE / CRA baselines: the spec's parameter counts, the cascade by hand,
teacher and targets, masked sequence encoders, the incomplete sampler, the schedule, and
imagination on synthetic data (docs/mmin.md section 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imsa.batch import iterate_batches
from imsa.data.dataset import Dataset, Fold
from imsa.errors import ConfigError
from imsa.methods.mmin import _module_groups
from imsa.methods.registry import method_class
from imsa.methods.spec import DataSpec
from imsa.missing import Condition, Incomplete, make_sampler
from imsa.nn.autoencoders import CascadeResidualAE, missing_reconstruction_loss, mlp
from imsa.nn.recurrent import LSTMMaxPool, TextCNN
from imsa.training import lr_factor

MMIN = method_class("mmin")
GCNET_DIMS = {"a": 512, "l": 1024, "v": 1024}


def spec(classes=4, task="classification", dims=GCNET_DIMS, sequence=False):
    return DataSpec(modalities=tuple(dims), dims=dims, sequence={m: sequence for m in dims}, task=task, output_dim=classes)


def count(module):
    return sum(p.numel() for p in module.parameters())


def counts(method: "MMIN", data: DataSpec) -> tuple[int, int]:
    """(phase-2 trainable, inference) parameters of the method's networks for ``data``."""
    net = method.build(data)
    dim = len(data.modalities) * method.config.embed_dim
    if method.config.variant == "mmin":
        extra = count(method._autoencoder(dim)[0])
    else:
        extra = sum(count(mlp(dim, (128, 128), d)) for d in data.dims.values())
    return count(net) + extra, count(net)


@pytest.mark.parametrize(
    "options, data, expected",
    [
        ({}, spec(4), (3_874_052, 2_179_652)),
        ({}, spec(6), (3_874_310, 2_179_910)),
        ({}, spec(1, "regression"), (3_873_665, 2_179_265)),
        ({}, spec(4, dims={"l": 1024, "a": 512}), (2_724_996, 1_523_012)),
        ({"variant": "ae"}, spec(4), (1_284_228, 756_612)),
        ({"variant": "cra"}, spec(4), (1_843_076, 1_315_460)),
        ({}, spec(4, dims={"a": 130, "v": 342, "l": 1024}, sequence=True), (5_444_228, 3_749_828)),
    ],
)
def test_parameter_counts_are_the_released_models(options, data, expected):
    assert counts(MMIN(**options), data) == expected


@pytest.mark.parametrize(
    "data, expected",
    [(spec(4), 493_444), (spec(4, dims={"l": 1024, "a": 512}), 312_836), (spec(4, dims={"a": 130, "v": 342, "l": 1024}, sequence=True), 2_063_620)],
)
def test_pretraining_model_counts(data, expected):
    method = MMIN()
    encoders = method._encoders(data, 0.3)
    assert count(encoders) + count(mlp(len(data.modalities) * 128, (128, 128), data.output_dim)) == expected


def test_cascade_by_hand():
    torch.manual_seed(0)
    cra = CascadeResidualAE(6, (5, 3), blocks=2)
    h = torch.randn(4, 6)
    enc = [cra.encoders[0], cra.encoders[1]]
    dec = [cra.decoders[0], cra.last_decoder]
    o1 = dec[0](enc[0](h))
    o2 = dec[1](enc[1](h + o1))
    out, latents = cra(h)
    torch.testing.assert_close(out, cra.transition(h + o1 + o2))
    torch.testing.assert_close(latents, torch.cat([enc[0](h), enc[1](h + o1)], dim=-1))
    # encoder: Linear, LeakyReLU, Linear (no last activation); decoder: Linear, ReLU, Linear
    assert [type(m).__name__ for m in enc[0]] == ["Linear", "LeakyReLU", "Linear"]
    assert [type(m).__name__ for m in dec[1]] == ["Linear", "ReLU", "Linear"]


def test_incomplete_sampler():
    rng = np.random.default_rng(0)
    masks = Incomplete().sample(60_000, ("l", "a", "v"), rng)
    assert masks.any(1).all() and not masks.all(1).any()
    shares = np.unique(masks @ np.array([4, 2, 1]), return_counts=True)[1] / len(masks)
    assert len(shares) == 6 and np.allclose(shares, 1 / 6, atol=0.01)
    two = Incomplete().sample(10_000, ("l", "a"), rng)
    assert (two.sum(1) == 1).all() and abs(two[:, 0].mean() - 0.5) < 0.02
    with pytest.raises(ConfigError, match="at least two modalities"):
        Incomplete().sample(3, ("l",), rng)
    assert make_sampler("incomplete") == Incomplete()


def test_linear_schedule_is_mmins():
    factor = lr_factor("linear:20", 100)
    assert [factor(k) for k in range(20)] == [1.0] * 20
    assert factor(20) == pytest.approx(1 - 1 / 81) and factor(99) == pytest.approx(1 / 81)


def test_sequence_encoders_ignore_padding():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 5)
    mask = torch.arange(6)[None] < torch.tensor([6, 4, 2])[:, None]
    x = x * mask[..., None]
    longer = torch.cat([x, torch.randn(3, 4, 5)], dim=1)  # extra steps, padded
    longer_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    for encoder in (LSTMMaxPool(5, 7), TextCNN(5, 7).eval()):
        torch.testing.assert_close(encoder(x, mask), encoder(longer, longer_mask))
        alone = encoder(x[2:, :2], mask[2:, :2])
        torch.testing.assert_close(encoder(x, mask)[2:], alone)


def imagination_data(seed: int = 0, n: int = 3000) -> Dataset:
    """Text and audio carry the same 8-d latent (audio redundant with text), vision is noise;
    4 classes from the latent."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((n, 8))
    project = {"l": rng.standard_normal((8, 32)), "a": rng.standard_normal((8, 16))}
    features = {m: (s @ w + 0.3 * rng.standard_normal((n, w.shape[1]))).astype(np.float32) for m, w in project.items()}
    features["v"] = rng.standard_normal((n, 8)).astype(np.float32)
    labels = (s[:, 0] > 0).astype(np.int64) * 2 + (s[:, 1] > 0)
    ids = [f"v{i}" for i in range(n)]
    return Dataset(
        name="imagination",
        modalities=("l", "a", "v"),
        features=features,
        labels=labels,
        utterance_ids=ids,
        video_ids=ids,
        folds=[Fold(tuple(ids[:2400]), tuple(ids[2400:2700]), tuple(ids[2700:]))],
        task="classification",
        class_names=("c0", "c1", "c2", "c3"),
    )


def audio_slot_cosine(method, test) -> float:
    """Mean cosine, under condition {l}, between the audio slot the forward CRA imagines and
    the teacher's embedding of the true audio."""
    net, teacher = method.model_, method.teacher_
    sims = []
    for batch in iterate_batches(test, 300):
        with torch.no_grad():
            only_text = batch.with_present(torch.from_numpy(np.broadcast_to(Condition.parse("l").mask(batch.modalities), batch.present.shape).copy()))
            _, imagined, _ = net.run(only_text)
            truth = teacher(batch.with_present(torch.from_numpy(np.broadcast_to(Condition.parse("a").mask(batch.modalities), batch.present.shape).copy())))
        slot = slice(16, 32)  # modalities l, a, v: audio is the second slot of 16
        sims.append(F.cosine_similarity(imagined[:, slot], truth[:, slot], dim=-1))
    return torch.cat(sims).mean().item()


def test_imagination_recovers_the_removed_modality_and_needs_its_loss():
    data = imagination_data()
    split = data.split(0)
    options = dict(
        embed_dim=16,
        encoder_layers=(32, 32),
        classifier_layers=(32, 32),
        ae_layers=(32, 16, 8),
        ae_blocks=2,
        pretrain_epochs=30,
        epochs=40,
        pretrain_lr_schedule="linear:10",
        lr_schedule="linear:10",
    )
    imagined = MMIN(**options).fit(split["train"], split["valid"], seed=0)
    without = MMIN(mse_weight=0.0, **options).fit(split["train"], split["valid"], seed=0)
    with_loss, no_loss = audio_slot_cosine(imagined, split["test"]), audio_slot_cosine(without, split["test"])
    assert with_loss > 0.6 and with_loss > no_loss + 0.3, (with_loss, no_loss)
    # the teacher is frozen and in eval mode; the student encoders moved away from it
    teacher = imagined.teacher_
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    student = imagined.model_.encoders.state_dict()
    assert any(not torch.equal(student[k], v) for k, v in teacher.state_dict().items())


def test_targets_of_present_slots_are_the_teachers_embedding_of_zeros(synthetic):
    split = synthetic.split(0)
    method = MMIN(pretrain_epochs=2, epochs=1, embed_dim=4, encoder_layers=(8,), classifier_layers=(8,), ae_layers=(8, 4), ae_blocks=2).fit(
        split["train"], split["valid"]
    )
    batch = next(iterate_batches(split["test"], 16))
    present = torch.zeros_like(batch.present)
    present[:, 0] = True  # only text present: its target slot is the teacher on zeros
    with torch.no_grad():
        target = method.teacher_(batch.with_present(~present))
        real_audio = method.teacher_(batch.with_present(torch.tensor([[False, True, False]]).expand_as(present)))
    assert torch.allclose(target[:, :4], target[:1, :4].expand(len(batch), 4)) and target[:, :4].abs().sum() > 0
    torch.testing.assert_close(target[:, 4:8], real_audio[:, 4:8])


def test_frozen_encoders_stay_the_teachers(synthetic):
    split = synthetic.split(0)
    method = MMIN(pretrain_epochs=2, epochs=2, freeze_encoders=True, embed_dim=4, encoder_layers=(8,), classifier_layers=(8,)).fit(
        split["train"], split["valid"]
    )
    student = method.model_.encoders.state_dict()
    assert all(torch.equal(student[k], v) for k, v in method.teacher_.state_dict().items())


def test_every_trained_parameter_is_clipped_in_exactly_one_group(synthetic):
    method = MMIN(embed_dim=4, encoder_layers=(8,), classifier_layers=(8,))
    from imsa.methods.mmin import MMINTraining

    net = method.build(DataSpec.of(synthetic))
    trainer = MMINTraining(net, method._autoencoder(12)[0], None)
    groups = _module_groups(trainer)
    assert len(groups) == 3 + 3  # three encoders, the autoencoder, the classifier, the backward autoencoder
    ids = [id(p) for g in groups for p in g]
    assert sorted(ids) == sorted(id(p) for p in trainer.parameters())


def test_ae_and_cra_reconstruction_counts_missing_cells_as_a_batch_sum():
    generator = torch.Generator().manual_seed(0)
    recon, target = torch.randn(8, 6, generator=generator), torch.randn(8, 6, generator=generator)
    real = torch.ones(8, dtype=torch.bool)
    assert missing_reconstruction_loss(recon, target, [2, 4], torch.zeros(8, 2, dtype=torch.bool), real, reduction="sum") == 0
    missing = torch.zeros(8, 2, dtype=torch.bool)
    missing[:, 1] = True
    by_hand = ((recon[:, 2:] - target[:, 2:]) ** 2).sum() / 4
    torch.testing.assert_close(missing_reconstruction_loss(recon, target, [2, 4], missing, real, reduction="sum"), by_hand)
    doubled = missing_reconstruction_loss(recon.repeat(2, 1), target.repeat(2, 1), [2, 4], missing.repeat(2, 1), real.repeat(2), reduction="sum")
    torch.testing.assert_close(doubled, 2 * by_hand)


def test_mmin_refuses_one_modality_and_unknown_settings(synthetic):
    from imsa.testing import text_and_audio

    text = text_and_audio(synthetic)
    text_only = Dataset(
        name="text-only",
        modalities=("l",),
        features={"l": text.features["l"]},
        labels=text.labels,
        utterance_ids=text.utterance_ids,
        video_ids=text.video_ids,
        folds=text.folds,
        task=text.task,
    )
    split = text_only.split(0)
    with pytest.raises(ConfigError, match="MMIN needs at least two modalities"):
        MMIN(epochs=1).fit(split["train"], split["valid"])
    with pytest.raises(ConfigError, match="variant"):
        MMIN(variant="vae")
    with pytest.raises(ConfigError, match="init"):
        MMIN(init="normal")


def test_fixed_protocol_selects_phase_2_on_the_incomplete_conditions_only(synthetic, tmp_path):
    from imsa.files import load_tensors_only
    from imsa.training import RunContext

    split = synthetic.split(0)
    MMIN(pretrain_epochs=1, epochs=1, embed_dim=4, encoder_layers=(8,), classifier_layers=(8,)).fit(
        split["train"], split["valid"], context=RunContext(workdir=tmp_path, device="cpu")
    )
    settings = {phase: load_tensors_only(tmp_path / f"{phase}.pt")["fingerprint"]["settings"] for phase in ("pretrain", "mmin")}
    assert settings == {"pretrain": ["l,a,v"], "mmin": sorted(["l", "a", "v", "l,a", "l,v", "a,v"])}
