"""CMAD-specific checks (the generic contract is in test_methods.py).

The losses against values worked out by hand, the Perceiver's padding mask, the frozen
teacher, the student's training distribution, MAR's schedule, the ablation switches
and the text-encoder path.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imsa.training import RunContext
from imsa.data.batch import tensor_cache
from imsa.errors import ConfigError
from imsa.methods.base import DataSpec
from imsa.methods.cmad import CMAD, CMADConfig, ModalityReweighting, cafd_loss, logit_distillation, mar_weights
from imsa.missing import condition_index, fixed_conditions
from imsa.nn.perceiver import Perceiver

TINY = dict(
    epochs=2, teacher_epochs=2, batch_size=16, dim=16, depth=1, num_latents=2, heads=2, dim_head=8,
    fusion_heads=2, fusion_ffn=32, lr=1e-3, begin_epoch=1,
)

# -- CAFD and MAR by hand ------------------------------------------------------------------------


def test_cafd_of_identical_features_is_zero_and_finite():
    # All-zero difference: the diagonal ratio is 0/0 without its guard.
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = cafd_loss(h.clone().requires_grad_(), h)
    assert loss.item() == 0.0
    loss.backward()


def test_cafd_of_swapped_features_by_hand():
    # h_t = e1, e2; h_s = e2, e1. m_i = mean((0-1)^2, (1-0)^2) = 1.
    # S_tt = I, S_st = [[0, 1], [1, 0]]. With tau = 0.2: P_0 = softmax([0, 5]), Q_0 = softmax([5, 0]),
    # so with a = e^5 / (1 + e^5), b = 1 - a: KL(Q||P) = KL(P||Q) = (a - b) ln(a / b) = 5 tanh(2.5) = k_i.
    # Delta = all ones: L_diag = 2 / 4. CAFD = mean(k_i * m_i) + 0.5 = 5 tanh(2.5) + 0.5.
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    student = teacher.flip(0)
    assert cafd_loss(student, teacher, tau=0.2).item() == pytest.approx(5 * math.tanh(2.5) + 0.5, rel=1e-5)
    # Without the correlation term: the plain feature MSE.
    assert cafd_loss(student, teacher, correlation=False).item() == pytest.approx(1.0)


def test_cafd_weights_the_feature_distance_by_the_correlation_gap():
    # A student feature that is the teacher's scaled by 2 has the same cosines (k_i = 0,
    # Delta = 0) even though its MSE is not 0: CAFD is 0, the plain MSE is not.
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    student = 2 * teacher
    assert cafd_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-7)
    assert cafd_loss(student, teacher, correlation=False).item() == pytest.approx(float((teacher**2).mean()))


def test_mar_weights_by_hand():
    torch.testing.assert_close(mar_weights(torch.tensor([0.2, 0.0, 0.4]), scale=20.0), torch.tensor([5.0, 0.0, 20.0]))
    torch.testing.assert_close(mar_weights(torch.zeros(7)), torch.ones(7))  # nobody behind the teacher: all 1


def test_reweighting_is_computed_once_at_begin_epoch_from_the_epochs_before():
    mar = ModalityReweighting(3, begin_epoch=2, update="fixed", scale=20.0)
    for epoch, gaps in [(0, [0.1, 0.0, 0.4]), (1, [0.3, 0.0, 0.4])]:
        mar.start_epoch(epoch)
        torch.testing.assert_close(mar.weights, torch.ones(3))
        mar.observe(torch.tensor([0, 1, 2]), torch.tensor(gaps))
    mar.start_epoch(2)  # D = (0.2, 0, 0.4)
    torch.testing.assert_close(mar.weights, torch.tensor([5.0, 0.0, 20.0]))
    mar.observe(torch.tensor([1]), torch.tensor([9.0]))  # ignored once fixed
    mar.start_epoch(3)
    torch.testing.assert_close(mar.weights, torch.tensor([5.0, 0.0, 20.0]))
    # per_epoch: the epoch just finished decides the next epoch's weights
    mar = ModalityReweighting(2, begin_epoch=1, update="per_epoch", scale=20.0)
    for epoch, gaps, expected in [(0, [1.0, 0.5], [1.0, 1.0]), (1, [0.1, 0.2], [20.0, 5.0]), (2, [0.0, 0.0], [5.0, 20.0])]:
        mar.start_epoch(epoch)
        torch.testing.assert_close(mar.weights, torch.tensor(expected))
        mar.observe(torch.tensor([0, 1]), torch.tensor(gaps))
    mar.start_epoch(3)
    torch.testing.assert_close(mar.weights, torch.ones(2))


def test_logit_distillation_by_hand():
    assert logit_distillation(torch.tensor([1.0]), torch.tensor([0.5]), "regression", 7.0).item() == pytest.approx(0.25)
    same = torch.tensor([[1.0, 2.0, 3.0]])
    assert logit_distillation(same, same, "classification", 7.0).item() == pytest.approx(0.0, abs=1e-7)
    # T^2 KL(p_t || p_s) with T = 1, p_t = (1/2, 1/2), p_s = softmax(0, ln 3) = (1/4, 3/4)
    value = logit_distillation(torch.tensor([[0.0, math.log(3)]]), torch.zeros(1, 2), "classification", 1.0).item()
    assert value == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))


# -- the Perceiver -------------------------------------------------------------------------------


def test_perceiver_output_is_independent_of_padded_positions():
    torch.manual_seed(0)
    perceiver = Perceiver(input_dim=8, dim=16, depth=2, num_latents=3, heads=2, dim_head=4).eval()
    data = torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    out = perceiver(data, mask)
    noisy = data.clone()
    noisy[0, 3:] = 1e3 * torch.randn(2, 8)
    longer = torch.cat([noisy, torch.randn(2, 4, 8)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(perceiver(longer, longer_mask), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(perceiver(data[:1, :3]), out[:1], atol=1e-5, rtol=1e-5)
    # ...and the mask does something: without it the padded noise changes the output.
    assert not torch.allclose(perceiver(noisy), out, atol=1e-3)


# -- the recipe ----------------------------------------------------------------------------------


class PhaseOf:
    """Callback that knows the running phase, and records the student's training masks."""

    def __init__(self):
        self.phase = None
        self.student_masks: list[np.ndarray] = []

    def on_phase_start(self, phase, epochs, start_epoch):
        self.phase = phase

    def hook(self, module, args):
        (batch,) = args
        if self.phase == "student" and module.training:
            self.student_masks.append(batch.present.numpy().copy())


@pytest.fixture(scope="module")
def fitted(synthetic):
    """A tiny CMAD fit that records the teacher at the end of its phase and the student's masks."""
    split = synthetic.split(0)
    method = CMAD(TINY, epochs=12)
    recorder = PhaseOf()
    build, train_phase, snapshots = method.build, method.train_phase, {}

    def recording_build(spec):
        net = build(spec)
        net.register_forward_pre_hook(recorder.hook)
        return net

    def recording_train_phase(model, *args, phase, **kwargs):
        result = train_phase(model, *args, phase=phase, **kwargs)
        snapshots[phase] = {k: v.clone() for k, v in model.state_dict().items()}
        return result

    method.build, method.train_phase = recording_build, recording_train_phase
    method.fit(split["train"], split["valid"], seed=0, context=RunContext([recorder]))
    return method, recorder, snapshots


def test_teacher_is_frozen_during_student_training(fitted):
    method, _, snapshots = fitted
    assert [p.phase for p in method.phases_] == ["teacher", "student"]
    teacher = method.teacher_
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, snapshots["teacher"][key]), key
    # The student did train: its weights are not the teacher's and moved.
    assert any(not torch.equal(v, snapshots["teacher"][k]) for k, v in method.model_.state_dict().items())


def test_student_trains_on_cmads_combination_distribution(fitted, synthetic):
    _, recorder, _ = fitted
    masks = np.concatenate(recorder.student_masks)
    n = len(masks)
    assert n == 12 * len(synthetic.split(0)["train"])  # every training sample of every epoch, one mask each
    counts = np.bincount(condition_index(masks), minlength=7) / n
    expected = {"l": 2, "a": 3, "v": 3, "l,a": 1, "l,v": 1, "a,v": 3, "l,a,v": 1}
    for condition, frequency in zip(fixed_conditions(("l", "a", "v")), counts):
        p = expected[condition.name] / 14
        assert abs(frequency - p) < 4 * math.sqrt(p * (1 - p) / n), (condition.name, frequency, p)


def test_mar_weights_are_reported_per_condition(fitted):
    method, _, _ = fitted
    weights = method.mar_weights_
    assert list(weights) == [c.name for c in fixed_conditions(("l", "a", "v"))]
    assert max(weights.values()) == pytest.approx(20.0)  # begin_epoch=1: computed from epoch 0


@pytest.mark.parametrize("switch", ["cafd", "correlation", "mar", "logit_distillation"])
def test_each_ablation_switch_changes_the_student(synthetic, switch):
    split = synthetic.split(0)
    full = CMAD(TINY).fit(split["train"], split["valid"], seed=0)
    ablated = CMAD(TINY, **{switch: False}).fit(split["train"], split["valid"], seed=0)
    teacher_state = full.teacher_.state_dict()
    assert all(torch.equal(v, teacher_state[k]) for k, v in ablated.teacher_.state_dict().items())  # same teacher
    assert any(not torch.equal(v, full.model_.state_dict()[k]) for k, v in ablated.model_.state_dict().items()), switch


def test_teacher_only_predicts_with_the_teacher(synthetic):
    split = synthetic.split(0)
    method = CMAD(TINY, train_student=False).fit(split["train"], split["valid"], seed=0)
    assert [p.phase for p in method.phases_] == ["teacher"]
    full = CMAD(TINY).fit(split["train"], split["valid"], seed=0)
    assert all(torch.equal(v, full.teacher_.state_dict()[k]) for k, v in method.model_.state_dict().items())


def test_invalid_configs_are_config_errors(synthetic):
    with pytest.raises(ConfigError, match="mar_update"):
        CMADConfig(mar_update="sometimes")
    with pytest.raises(ConfigError, match="fusion_heads"):
        CMADConfig(dim=96, fusion_heads=5)
    split = synthetic.split(0)
    with pytest.raises(ConfigError, match="transcripts"):
        CMAD(TINY, text_encoder="minilm").fit(split["train"], split["valid"])


# -- the fine-tuned text encoder -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory):
    """A randomly initialised 2-layer BERT saved as a local Hugging Face folder, with MiniLM's tokenizer."""
    transformers = pytest.importorskip("transformers")
    from imsa.nn.text_encoder import default_text_model_path

    try:
        source = default_text_model_path()
    except ConfigError as e:
        pytest.skip(str(e))
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(str(source), local_files_only=True).save_pretrained(folder)
    return folder


def test_text_encoder_path_fine_tunes_the_encoder_on_transcripts(synthetic, tiny_text_model):
    import dataclasses

    words = ["good", "bad", "fine", "awful", "great", "poor"]
    dataset = dataclasses.replace(synthetic, transcripts=[f"{words[i % 6]} movie number {i}" for i in range(len(synthetic))])
    split = dataset.split(0)
    method = CMAD(TINY, text_encoder=str(tiny_text_model), max_text_length=16)
    initial = method.build(DataSpec.of(dataset))  # the encoder as loaded, before fine-tuning
    method.fit(split["train"], split["valid"], seed=0)
    student = method.model_
    assert student.text_encoder is not None and student.convs["l"].in_channels == 32
    moved = [k for k, v in student.text_encoder.state_dict().items() if not torch.equal(v, initial.text_encoder.state_dict()[k])]
    assert moved, "the text encoder was not fine-tuned"
    # A missing text changes nothing, whatever the transcript says.
    batch = tensor_cache(dataset).gather(split["test"].indices[:8])
    present = torch.ones(8, 3, dtype=torch.bool)
    present[:, 0] = False
    before = method.predict(batch, present).prediction
    other = dataclasses.replace(batch, texts=tuple("completely different words" for _ in range(8)))
    assert torch.equal(method.predict(other, present).prediction, before)
    # ...and a present text is read.
    assert not torch.equal(method.predict(other).prediction, method.predict(batch).prediction)


# -- configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mosi-bclstm", "mosi-transcripts"])
def test_packaged_configs_build_valid_configs(name):
    from imsa.config import build_config, packaged_config
    from imsa.experiments.runner import Experiment

    raw = packaged_config("cmad", name).values
    assert raw, f"configs/cmad/{name}.yaml is missing or empty"
    config = build_config(CMADConfig, raw)
    assert (config.dim, config.num_latents, config.heads, config.dim_head) == (96, 5, 16, 16)  # the paper's backbone
    assert (config.tau, config.delta, config.gamma, config.mar_scale) == (0.2, 0.1, 1.0, 20.0)  # and losses
    assert Experiment("cmad", dataset=name).resolved_config() == config
