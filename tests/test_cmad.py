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

from imsa.batch import tensor_cache
from imsa.errors import ConfigError
from imsa.methods.cmad import CMAD, CMADConfig, ModalityReweighting, cafd_loss, logit_distillation, mar_weights
from imsa.methods.spec import DataSpec
from imsa.missing import condition_index, fixed_conditions
from imsa.nn.perceiver import Perceiver
from imsa.training import RunContext

TINY = dict(
    epochs=2,
    teacher_epochs=2,
    batch_size=16,
    dim=16,
    depth=1,
    num_latents=2,
    heads=2,
    dim_head=8,
    fusion_heads=2,
    fusion_ffn=32,
    lr=1e-3,
    begin_epoch=1,
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

    def recording_train_phase(model, train, valid, phase, **kwargs):
        result = train_phase(model, train, valid, phase, **kwargs)
        snapshots[phase.name] = {k: v.clone() for k, v in model.state_dict().items()}
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
    # The training objective differs (the selected epochs may be the same, before MAR starts).
    assert [h["loss"] for h in ablated.phases_[1].history] != [h["loss"] for h in full.phases_[1].history], switch


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


# -- as released: initialisation, clipping, lengths, selection ---------------------------------------


PAPER_SPEC = DataSpec(
    modalities=("l", "a", "v"), dims={"l": 768, "a": 74, "v": 47}, sequence={"l": True, "a": True, "v": True}, task="regression", output_dim=1
)


@pytest.mark.parametrize("init", ["released", "pytorch"])
def test_released_initialisation_of_linear_layers_only(init):
    torch.manual_seed(0)
    method = CMAD(init=init)
    net = method.build(PAPER_SPEC)
    linears = [(name, m) for name, m in net.named_modules() if isinstance(m, torch.nn.Linear)]
    assert (
        len(linears) == 3 * 5 * 10 + 2 * 3 + 2
    )  # per Perceiver layer: 2 attentions (q, kv, out) and 2 feed-forwards (2 each); per fusion layer out_proj and 2 FFN; project, head
    for name, layer in linears:
        if layer.weight.numel() >= 2000:  # enough entries for a tight estimate of the spread
            std = layer.weight.std().item()
            assert (abs(std - 0.02) < 0.002) == (init == "released"), (name, std)
        if layer.bias is not None and init == "released":
            assert not layer.bias.any(), name
    # PyTorch's defaults elsewhere: convolutions, latents and the fusion's packed in-projection.
    assert abs(net.convs["l"].weight.std().item() - 0.02) > 0.005
    assert abs(net.perceivers["a"].latents.std().item() - 1.0) < 0.3
    in_projection = net.fusion.layers[0].self_attn.in_proj_weight
    assert abs(in_projection.std().item() - (2 / (96 + 3 * 96)) ** 0.5) < 0.01  # Xavier uniform


def test_truncate_keeps_the_first_steps_and_the_last_as_a_tokenizer_does():
    from imsa.methods.cmad import truncate

    # Word-piece aligned rows: a zero row for [CLS], 60 rows, a zero row for [SEP]; padded to 70.
    rows = torch.arange(1, 61, dtype=torch.float32).unsqueeze(-1)
    long = torch.cat([torch.zeros(1, 1), rows, torch.zeros(9, 1)])  # 62 real steps (the last real one is [SEP]'s zero)
    short = torch.cat([torch.zeros(1, 1), rows[:10], torch.zeros(59, 1)])
    x = torch.stack([long, short])
    mask = torch.zeros(2, 70, dtype=torch.bool)
    mask[0, :62], mask[1, :12] = True, True
    cut, cut_mask = truncate(x, mask, 50)
    # The released pipeline: 48 word pieces between the two zero rows.
    assert cut[0, :, 0].tolist() == [0.0, *range(1, 49), 0.0]
    assert torch.equal(cut[1], short[:50]) and cut_mask[1].sum() == 12
    assert cut_mask[0].all() and cut.shape == (2, 50, 1)


def test_long_audio_and_vision_are_cut_to_max_length_in_the_model(synthetic):
    from imsa.batch import Batch

    torch.manual_seed(0)
    spec = DataSpec(modalities=("a", "v"), dims={"a": 3, "v": 2}, sequence={"a": True, "v": True}, task="regression", output_dim=1)
    method = CMAD(TINY, max_length=8)
    net = method.build(spec).eval()
    lengths = torch.tensor([12, 5])
    inputs = {m: torch.randn(2, 12, d) for m, d in spec.dims.items()}
    padding = {m: torch.arange(12) < lengths[:, None] for m in spec.modalities}
    batch = Batch(
        inputs=inputs, padding=padding, labels=torch.zeros(2), present=torch.ones(2, 2, dtype=torch.bool), index=torch.arange(2), modalities=spec.modalities
    )
    keep = torch.tensor([0, 1, 2, 3, 4, 5, 6, 11])  # first 7 steps and the last real one
    cut = Batch(
        inputs={m: x[:, keep] for m, x in inputs.items()},
        padding={m: p[:, :8] for m, p in padding.items()},
        labels=batch.labels,
        present=batch.present,
        index=batch.index,
        modalities=spec.modalities,
    )
    cut.inputs["a"][1], cut.inputs["v"][1] = inputs["a"][1, :8], inputs["v"][1, :8]
    with torch.no_grad():
        torch.testing.assert_close(net(batch).prediction, net(cut).prediction)
        unaligned = CMAD(TINY, max_length=8, aligned=False).build(spec).eval()
        unaligned.load_state_dict(net.state_dict())
        assert not torch.allclose(unaligned(batch).prediction, net(batch).prediction)  # the whole sequences


def test_text_is_tokenised_to_max_length_word_pieces(tiny_text_model):
    from imsa.nn.text_encoder import TextEncoder

    encoder = TextEncoder(str(tiny_text_model))
    tokens = encoder.tokenize([" ".join(["word"] * 80), "short text"], CMADConfig().max_length)
    assert tokens["input_ids"].shape == (2, 50) and tokens["attention_mask"][0].all()
    assert tokens["input_ids"][0, -1] == encoder.tokenizer.sep_token_id


def test_teacher_is_clipped_and_the_student_not_by_default(synthetic):
    import imsa.methods.phase as base

    clips = {}
    train = base.run_training

    def recording(model, optimizer, *, phase, grad_clip, **kwargs):
        clips[phase] = grad_clip
        return train(model, optimizer, phase=phase, grad_clip=grad_clip, **kwargs)

    split = synthetic.split(0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base, "run_training", recording)
        CMAD({**TINY, "epochs": 1, "teacher_epochs": 1}).fit(split["train"], split["valid"], seed=0)
        assert clips == {"teacher": 1.0, "student": None}
        CMAD({**TINY, "epochs": 1, "teacher_epochs": 1, "student_grad_clip": 0.5}).fit(split["train"], split["valid"], seed=0)
        assert clips == {"teacher": 1.0, "student": 0.5}


def test_select_condition_scores_the_student_under_that_condition_only(synthetic):
    import imsa.methods.base as base

    settings = {}
    train_phase = base.Method.train_phase

    def recording(self, model, train, valid, phase, **kwargs):
        settings[phase.name] = list(phase.settings)
        return train_phase(self, model, train, valid, phase, **kwargs)

    split = synthetic.split(0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base.Method, "train_phase", recording)
        CMAD({**TINY, "epochs": 1, "teacher_epochs": 1, "select_condition": "v, a,l", "select_metric": "f1_non0"}).fit(split["train"], split["valid"], seed=0)
    assert settings == {"teacher": ["l,a,v"], "student": ["l,a,v"]}
    with pytest.raises(ConfigError, match="select_condition"):
        CMAD({**TINY, "select_condition": "l,x"}).fit(split["train"], split["valid"], seed=0)


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
    method = CMAD(TINY, text_encoder=str(tiny_text_model), max_length=16)
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


# -- IEMOCAP as CMAD scores it: one present/absent task per emotion ----------------------------------


def iemocap_mult_file(path, seed=0):
    """A MulT iemocap_data.pkl (20 steps, 300/74/35) whose utterances may have several emotions present."""
    import pickle

    rng = np.random.default_rng(seed)
    content = {}
    for s, (split, n) in enumerate((("train", 48), ("valid", 16), ("test", 16))):
        present = rng.random((n, 4)) < 0.4
        present[:4] = [[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]]  # two, two, one and no emotion
        labels = np.stack([~present, present], axis=-1).astype(np.float32)
        features = {k: rng.standard_normal((n, 20, d)).astype(np.float32) for k, d in (("text", 300), ("audio", 74), ("vision", 35))}
        ids = np.array([f"Ses0{s + 1}F_impro0{k % 4}_{k}" for k in range(n)])
        content[split] = {**features, "labels": labels, "id": ids}
    path.write_bytes(pickle.dumps(content))
    return path


def test_cmad_runs_the_per_emotion_task_and_reports_each_emotion(tmp_path):
    from imsa.cli import main
    from imsa.experiments.store import load_record, read_summary

    data = iemocap_mult_file(tmp_path / "iemocap_data.pkl")
    out = tmp_path / "run"
    sets = [f"{k}={v}" for k, v in {**TINY, "epochs": 2, "teacher_epochs": 2, "dkd": True}.items()]
    assert main(["run", "--method", "cmad", "--dataset", str(data), "--out", str(out), "--quiet", *sum((["--set", s] for s in sets), [])]) == 0
    (record,) = [load_record(p) for p in (out / "runs").glob("*.json")]
    assert record.task == "multilabel"
    for setting, metrics in record.metrics["test"].items():
        for name in ("neutral", "happy", "sad", "angry"):
            assert 0 <= metrics[f"binary_acc_{name}"] <= 1 and 0 <= metrics[f"binary_f1_{name}"] <= 1, setting
        assert metrics["emotion_binary_acc"] == pytest.approx(np.mean([metrics[f"binary_acc_{n}"] for n in ("neutral", "happy", "sad", "angry")]))
    # The per-emotion accuracy is what the saved predictions give, emotion by emotion.
    saved = np.load(next((out / "predictions").glob("*.npz")))
    key = next(k for k in saved.files if k.endswith("l,a,v") or k == "l,a,v")
    decisions = saved[key].argmax(-1)
    from imsa.data.registry import load_dataset

    dataset = load_dataset(str(data))
    test = dataset.split(0)["test"]
    for k, name in enumerate(dataset.class_names):
        assert record.metrics["test"]["l,a,v"][f"binary_acc_{name}"] == pytest.approx(np.mean(decisions[:, k] == test.labels[:, k]))
    assert "emotion_binary_f1" in read_summary(out)["test"]["mean"]


def test_methods_without_the_per_emotion_task_refuse_it_naming_one_that_has_it(tmp_path):
    from imsa.data.registry import load_dataset
    from imsa.methods import create_method

    dataset = load_dataset(str(iemocap_mult_file(tmp_path / "iemocap_data.pkl")))
    split = dataset.split(0)
    for name in ("late_fusion", "early_fusion", "momke"):
        with pytest.raises(ConfigError, match=r"not multilabel.*data\.emotions=classes.*cmad"):
            create_method(name).fit(split["train"], split["valid"])


def test_decoupled_kd_by_hand():
    from imsa.methods.cmad import decoupled_kd

    student, teacher = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[2.0, 0.5, 0.0]])
    target = torch.tensor([0])
    p_s, p_t = student.softmax(-1)[0], teacher.softmax(-1)[0]
    b_s, b_t = torch.stack([p_s[0], 1 - p_s[0]]), torch.stack([p_t[0], 1 - p_t[0]])
    tckd = (b_t * (b_t / b_s).log()).sum()
    r_s, r_t = p_s[1:] / p_s[1:].sum(), p_t[1:] / p_t[1:].sum()
    nckd = (r_t * (r_t / r_s).log()).sum()
    assert decoupled_kd(student, teacher, target, alpha=1.0, beta=8.0, temperature=1.0).item() == pytest.approx((tckd + 8 * nckd).item(), rel=1e-5)
    # Two classes: NCKD is 0 and DKD is alpha times the plain KL.
    s2, t2 = student[:, :2], teacher[:, :2]
    kl = (t2.softmax(-1) * (t2.log_softmax(-1) - s2.log_softmax(-1))).sum()
    assert decoupled_kd(s2, t2, target, alpha=2.0, beta=8.0, temperature=1.0).item() == pytest.approx(2 * kl.item(), rel=1e-5)


def test_a_model_of_imsa_0_2_with_max_text_length_loads_with_a_warning(synthetic):
    split = synthetic.split(0)
    method = CMAD({**TINY, "epochs": 1, "teacher_epochs": 1}).fit(split["train"], split["valid"], seed=0)
    state = method.state_dict()
    config = dict(state["config"])
    config["max_text_length"] = config.pop("max_length")
    with pytest.warns(UserWarning, match="imsa 0.2.0"):
        loaded = CMAD().load_state_dict({**state, "config": config})
    assert loaded.config.max_length == method.config.max_length
