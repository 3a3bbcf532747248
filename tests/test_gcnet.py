"""GCNet: the spec's parameter counts, graph builder, graph layers, batch independence,
completion loss and behaviour on synthetic conversations (docs/gcnet.md section 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imsa.batch import Batch, iterate_batches
from imsa.data.dataset import Dataset, Fold
from imsa.methods.phase import TrainingMasks
from imsa.methods.registry import method_class
from imsa.methods.spec import DataSpec
from imsa.missing import RandomRate
from imsa.nn.autoencoders import missing_reconstruction_loss
from imsa.nn.graph import FUTURE, NOW, PAST, GraphConv, RelationalGraphConv, window_graph
from imsa.protocols import Protocol

GCNet = method_class("gcnet")
DIMS = {"a": 512, "l": 1024, "v": 1024}


def spec(classes, speakers, task="classification", dims=DIMS):
    return DataSpec(modalities=tuple(dims), dims=dims, sequence={m: False for m in dims}, task=task, output_dim=classes, num_speakers=speakers)


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "classes, speakers, task, time_attn, expected",
    [
        (6, 2, "classification", False, 28_101_366),
        (6, 2, "classification", True, 30_103_366),
        (4, 2, "classification", False, 28_100_364),
        (1, 1, "regression", False, 27_978_861),
    ],
)
def test_parameter_counts_are_the_released_models_used_parameters(classes, speakers, task, time_attn, expected):
    net = GCNet(time_attn=time_attn).build(spec(classes, speakers, task))
    assert count(net) == expected
    assert count(net.base) == 5_382_400 and count(net.temporal.rgcn) == 160_100 and count(net.speaker.rgcn) == (200_100 if speakers == 2 else 80_100)
    assert count(net.temporal.gconv) == 20_100 and count(net.temporal.lstm) == 10_016_000 and count(net.temporal.out) == 500_500
    assert count(net.reconstruction) == 1_282_560


def test_window_graph_gives_the_specs_worked_example():
    # speakers F F M F M (F = 0, M = 1), window 1
    graph = window_graph(torch.ones(1, 5, dtype=torch.bool), 1, 1, torch.tensor([[0, 0, 1, 0, 1]]), 2)
    edges = {(int(s), int(t)): (int(k), int(p)) for s, t, k, p in zip(graph.source, graph.target, graph.temporal, graph.speaker)}
    F, M = 0, 1
    speaker = lambda receiver, sender: 2 * receiver + sender  # noqa: E731
    expected = {
        (0, 0): (NOW, speaker(F, F)),
        (0, 1): (PAST, speaker(F, F)),
        (1, 0): (FUTURE, speaker(F, F)),
        (1, 1): (NOW, speaker(F, F)),
        (1, 2): (PAST, speaker(M, F)),
        (2, 1): (FUTURE, speaker(F, M)),
        (2, 2): (NOW, speaker(M, M)),
        (2, 3): (PAST, speaker(F, M)),
        (3, 2): (FUTURE, speaker(M, F)),
        (3, 3): (NOW, speaker(F, F)),
        (3, 4): (PAST, speaker(M, F)),
        (4, 3): (FUTURE, speaker(F, M)),
        (4, 4): (NOW, speaker(M, M)),
    }
    assert len(graph.source) == 13 and edges == expected


@pytest.mark.parametrize("window", [0, 1, 2, 5])
def test_window_graph_edge_counts_and_no_edge_between_conversations(window):
    lengths = [7, 3, 1, 5]
    real = torch.arange(7)[None] < torch.tensor(lengths)[:, None]
    graph = window_graph(real, window, window)
    expected = sum(min(n - 1, j + window) - max(0, j - window) + 1 for n in lengths for j in range(n))
    assert len(graph.source) == expected
    assert torch.equal(graph.source // 7, graph.target // 7)  # same conversation
    assert real.reshape(-1)[graph.source].all() and real.reshape(-1)[graph.target].all()  # never padding
    assert (graph.target - graph.source).abs().max() <= window


def test_graph_layers_equal_a_dense_reference():
    torch.manual_seed(0)
    n, relations = 9, 3
    source, target = torch.randint(0, n, (30,)), torch.randint(0, n, (30,))
    relation = torch.randint(0, relations, (30,))
    x = torch.randn(n, 6)
    rgcn, gconv = RelationalGraphConv(6, 4, relations), GraphConv(4, 4)
    torch.nn.init.normal_(rgcn.bias)
    expected = x @ rgcn.root + rgcn.bias
    for i in range(n):
        for r in range(relations):
            incoming = [int(s) for s, t, k in zip(source, target, relation) if t == i and k == r]
            if incoming:  # a relation without an edge into i adds nothing
                expected[i] += torch.stack([x[s] @ rgcn.weight[r] for s in incoming]).mean(0)
    y = rgcn(x, source, target, relation)
    torch.testing.assert_close(y, expected)
    summed = torch.stack([sum((y[int(s)] for s, t in zip(source, target) if t == i), torch.zeros(4)) for i in range(n)])
    torch.testing.assert_close(gconv(y, source, target), gconv.lin_rel(summed) + gconv.lin_root(y))


def test_the_graph_part_is_local():
    window = 1
    real = torch.ones(1, 12, dtype=torch.bool)
    graph = window_graph(real, window, window)
    rgcn, gconv = RelationalGraphConv(4, 4, 3), GraphConv(4, 4)
    x = torch.randn(12, 4)

    def output(features):
        return gconv(rgcn(features, graph.source, graph.target, graph.temporal), graph.source, graph.target)[5]

    far, near = x.clone(), x.clone()
    far[5 + 2 * window + 1] += 10.0
    near[5 + window] += 10.0
    assert torch.equal(output(far), output(x))
    assert not torch.allclose(output(near), output(x))


def conversations(lengths, dims=(3, 4, 2), seed=0):
    """A video-level batch of conversations of the given lengths, every modality present."""
    generator = torch.Generator().manual_seed(seed)
    b, s = len(lengths), max(lengths)
    real = torch.arange(s)[None] < torch.tensor(lengths)[:, None]
    inputs = {m: torch.randn(b, s, d, generator=generator) * real[..., None] for m, d in zip("lav", dims)}
    present = real[..., None].expand(b, s, 3).clone()
    speakers = torch.randint(0, 2, (b, s), generator=generator) * real
    return Batch(
        inputs=inputs,
        padding={},
        present=present,
        labels=torch.zeros(b, s),
        index=torch.where(real, 0, -1),
        modalities=("l", "a", "v"),
        utterance_mask=real,
        speakers=speakers,
    )


def test_a_conversations_output_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    net = GCNet(hidden=16, time_attn=True).build(spec(4, 2, dims={"l": 3, "a": 4, "v": 2})).eval()
    batch = conversations([4, 11, 7])
    alone = batch.select(torch.tensor([0]))
    alone = alone.map(lambda t: t[:, :4] if t.dim() >= 2 else t)  # no padding at all
    with torch.no_grad():
        together, single = net(batch).prediction[0, :4], net(alone).prediction[0]
        changed = batch.map(lambda t: t.clone())
        changed.inputs["l"][1] += 5.0
        other = net(changed).prediction[0, :4]
    torch.testing.assert_close(together, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(other, together, atol=1e-5, rtol=0)


def test_reconstruction_loss_by_hand_on_a_padded_batch():
    # two conversations of lengths 3 and 1, every modality missing, dims 2 and 4
    dims = [2, 4]
    real = torch.tensor([[True, True, True], [True, False, False]])
    generator = torch.Generator().manual_seed(0)
    recon, target = torch.randn(2, 3, 6, generator=generator), torch.randn(2, 3, 6, generator=generator)
    missing = torch.ones(2, 3, 2, dtype=torch.bool)
    by_hand = (
        sum(
            ((recon[b, s, :2] - target[b, s, :2]) ** 2).sum() / 2 + ((recon[b, s, 2:] - target[b, s, 2:]) ** 2).sum() / 4
            for b, s in [(0, 0), (0, 1), (0, 2), (1, 0)]
        )
        / 4
    )
    value = missing_reconstruction_loss(recon, target, dims, missing, real)
    torch.testing.assert_close(value, by_hand)
    # padded positions and present cells never count
    noisy = recon.clone()
    noisy[1, 1:] += 100.0
    assert torch.equal(missing_reconstruction_loss(noisy, target, dims, missing, real), value)
    partly = missing.clone()
    partly[0, 0, 1] = False
    changed = recon.clone()
    changed[0, 0, 2:] += 100.0
    assert torch.equal(missing_reconstruction_loss(changed, target, dims, partly, real), missing_reconstruction_loss(recon, target, dims, partly, real))
    assert missing_reconstruction_loss(recon, target, dims, torch.zeros_like(missing), real) == 0


def test_training_masks_at_a_rate_are_per_utterance_and_clear_padding():
    batch = conversations([40] * 30 + [5] * 30)
    masks = TrainingMasks(RandomRate(0.3), batch.modalities, seed=0, stream=7)
    drawn = masks.draw(batch, epoch=0)
    real = batch.utterance_mask
    assert not drawn.present[~real].any()
    assert abs(1.0 - drawn.present[real].float().mean().item() - 0.3) < 0.02
    assert drawn.complete is batch and torch.equal(drawn.batch.inputs["l"], batch.inputs["l"] * drawn.present[..., :1])
    assert torch.equal(masks.draw(batch, epoch=1).present, TrainingMasks(RandomRate(0.3), batch.modalities, 0, 7).draw(batch, epoch=1).present)


def persistent_conversations(num_videos: int, seed: int = 0) -> Dataset:
    """4 classes whose label persists from one utterance to the next with probability 0.9;
    each 8-d modality is its class mean plus noise (sd 1.5); two speakers at random."""
    rng = np.random.default_rng(seed)
    means = {m: rng.standard_normal((4, 8)) for m in "lav"}
    labels, videos, speakers = [], [], []
    for v in range(num_videos):
        label = rng.integers(4)
        for _ in range(rng.integers(10, 21)):
            label = label if rng.random() < 0.9 else rng.integers(4)
            labels.append(label)
            videos.append(f"video{v}")
            speakers.append("FM"[rng.integers(2)])
    labels = np.array(labels)
    features = {m: (means[m][labels] + 1.5 * rng.standard_normal((len(labels), 8))).astype(np.float32) for m in "lav"}
    ids = [f"video{v}" for v in range(num_videos)]
    n_train, n_valid = int(0.7 * num_videos), int(0.15 * num_videos)
    return Dataset(
        name="persistent",
        modalities=("l", "a", "v"),
        features=features,
        labels=labels.astype(np.int64),
        utterance_ids=[f"u{i}" for i in range(len(labels))],
        video_ids=videos,
        task="classification",
        folds=[Fold(tuple(ids[:n_train]), tuple(ids[n_train : n_train + n_valid]), tuple(ids[n_train + n_valid :]))],
        class_names=("c0", "c1", "c2", "c3"),
        annotations={"speakers": speakers},
    )


def test_gcnet_uses_the_conversation_where_an_utterance_level_model_cannot():
    data = persistent_conversations(230)
    split = data.split(0)
    protocol = Protocol("random", rate=0.7)
    test = split["test"]
    gcnet = GCNet(hidden=16, lr=3e-3, epochs=40, window_past=2, window_future=2).fit(split["train"], split["valid"], protocol=protocol, seed=0)
    early = method_class("early_fusion")(epochs=40, lr=3e-3).fit(split["train"], split["valid"], protocol=protocol, seed=0)
    settings = protocol.settings(test)
    ours, theirs = gcnet.evaluate(test, settings)["rate=0.7"]["wa"], early.evaluate(test, settings)["rate=0.7"]["wa"]
    assert ours > 0.85 and ours > theirs + 0.1, (ours, theirs)
    # the completion head recovers missing cells better than zeros do
    net = gcnet.model_
    present = torch.from_numpy(settings["rate=0.7"])
    errors = []
    for batch in iterate_batches(test, 8, level="video"):
        masked = batch.with_present(present[batch.index.clamp(min=0)])
        with torch.no_grad():
            recon = net.reconstruction(net.hidden(masked))
        missing = ~masked.present & batch.utterance_mask[..., None]
        target = net.targets(batch)
        errors.append(
            [
                missing_reconstruction_loss(recon, target, net.dims, missing, batch.utterance_mask, reduction="sum"),
                missing_reconstruction_loss(torch.zeros_like(recon), target, net.dims, missing, batch.utterance_mask, reduction="sum"),
            ]
        )
    completed, zeros = np.sum(errors, axis=0)
    assert completed < 0.8 * zeros, (completed, zeros)


def test_speakers_of_a_dataset_follow_the_specs_rule():
    data = persistent_conversations(3)
    index, count = data.speakers
    assert count == 2 and set(index) == {0, 1}
    assert all(i == (s == "M") for i, s in zip(index, data.annotations["speakers"]))  # F = 0, M = 1
    many = Dataset(
        name="many",
        modalities=("l",),
        features={"l": np.zeros((5, 2), np.float32)},
        labels=np.zeros(5, np.float32),
        utterance_ids=list("abcde"),
        video_ids=["x", "x", "x", "y", "y"],
        folds=[Fold(("x",), ("y",), ("y",))],
        annotations={"speakers": ["Cleo", "Ann", "Bob", "Bob", "Dan"]},
    )
    assert many.speakers[0].tolist() == [0, 1, 2, 0, 1] and many.speakers[1] == 3
    many.annotations.clear()
    del many.__dict__["speakers"]
    assert many.speakers[0].tolist() == [0] * 5 and many.speakers[1] == 1


def test_gcnet_refuses_data_with_more_speakers_than_it_was_trained_with():
    data = persistent_conversations(20)
    one_speaker = persistent_conversations(20)
    one_speaker.annotations.clear()
    split = one_speaker.split(0)
    method = GCNet(hidden=4, epochs=1).fit(split["train"], split["valid"])
    assert method.spec_.num_speakers == 1
    with pytest.raises(Exception, match="2 speakers per conversation"):
        method.check_data(data)


def test_gcnet_on_a_gcnet_iemocap_folder_uses_its_speakers(gcnet_iemocap):
    from imsa.data.registry import load_dataset

    data = load_dataset(str(gcnet_iemocap))
    split = data.split(0)
    method = GCNet(hidden=8, epochs=2, batch_size=4).fit(split["train"], split["valid"], seed=0)
    assert method.spec_.num_speakers == 2 and method.model_.speaker.rgcn.num_relations == 4
    batch = next(iterate_batches(split["test"], 4, level="video"))
    expected = np.where(batch.index.numpy() >= 0, data.speakers[0][batch.index.clamp(min=0).numpy()], 0)
    assert torch.equal(batch.speakers, torch.from_numpy(expected)) and set(expected[batch.index.numpy() >= 0]) == {0, 1}
    results = method.evaluate(split["test"], Protocol("random", rate=0.3).settings(split["test"]))
    assert set(results["rate=0.3"]) >= {"wa", "ua", "wf1"}
