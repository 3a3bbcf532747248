"""Transcripts, manifests and labels of `imsa extract` (pure parsing: no media packages needed)."""

from __future__ import annotations

import pytest

from imsa.media.decode import MediaError
from imsa.media.sources import apply_labels, manifest_jobs, source_jobs
from imsa.media.transcripts import Cue, read_transcript, timed_words

SRT = "\ufeff1\n00:00:01,500 --> 00:00:03,250\n<i>Hello</i> there,\nfriend.\n\n2\n00:00:04,000 --> 00:00:05,000\n\n"
VTT = "WEBVTT\n\nNOTE a comment\n\nintro\n00:01.000 --> 00:02.500 align:start\n<v Ann>Good <00:00:01.600>morning\n\n01:00:00.000 --> 01:00:01.000\nlate\n"


def test_srt_cues_become_segments(tmp_path):
    path = tmp_path / "a.srt"
    path.write_text(SRT, encoding="utf-8")
    assert read_transcript(path) == [Cue(1.5, 3.25, "Hello there, friend."), Cue(4.0, 5.0, "")]


def test_webvtt_cues_settings_tags_and_word_timings(tmp_path):
    path = tmp_path / "a.vtt"
    path.write_text(VTT)
    first, second = read_transcript(path)
    assert (first.start, first.end, first.text) == (1.0, 2.5, "Good morning") and second.start == 3600.0
    assert first.words == ((1.0, 1.6, "Good"), (1.6, 2.5, "morning")) and second.words == ()


def test_inline_timestamps_share_a_span_and_stay_inside_the_cue():
    assert timed_words("a b <00:00:02.000>c", 1.0, 3.0) == ((1.0, 1.5, "a"), (1.5, 2.0, "b"), (2.0, 3.0, "c"))
    assert timed_words("x <00:00:09.000>y", 1.0, 3.0)[-1] == (3.0, 3.0, "y")


def test_plain_text_is_one_segment(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("  several\nlines of   words ")
    assert read_transcript(path) == [Cue(None, None, "several lines of words")]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.srt", b"1\n00:00:01,000 --> 00:00:02,000\nCaf\xe9\n", "not UTF-8 text \\(byte"),
        ("a.srt", b"just words, no cue lines\n", "no cues"),
        ("a.vtt", b"WEBVTT\n\n00:00:03.000 --> 00:00:01.000\nbackwards\n", "ends \\(1.000 s\\) before it starts"),
        ("a.txt", b"nul\x00byte", "NUL bytes"),
    ],
)
def test_unusable_transcripts_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MediaError, match=message) as info:
        read_transcript(path)
    assert str(path) in str(info.value)


def test_a_folder_reads_each_transcript_beside_its_file_and_reports_the_bad_one(tmp_path):
    for name in ("b.mp4", "a.wav", "c.mp4"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "a.srt").write_text(SRT)
    (tmp_path / "c.srt").write_bytes(b"\xff\xfe bad")
    jobs, failures = source_jobs(tmp_path)
    assert [j.video_id for j in jobs] == ["a", "b"]
    assert [s.utterance_id for s in jobs[0].segments] == ["a_1", "a_2"] and jobs[1].segments[0].text is None
    assert len(failures) == 1 and failures[0][0].endswith("c.mp4") and "not UTF-8" in failures[0][1]


def test_a_manifest_with_times_and_ids(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "x.mp4").write_bytes(b"x")
    (tmp_path / "m.csv").write_text("media,start,end,text,label,utterance_id\nclips/x.mp4,0,1.5,hi,1,first\nclips/x.mp4,2,3,,0,\n")
    (job,) = manifest_jobs(tmp_path / "m.csv")
    assert job.video_id == "x" and [s.utterance_id for s in job.segments] == ["first", "x_2"]
    assert job.segments[0].text == "hi" and job.segments[1].text == "" and job.segments[1].label == "0"


@pytest.mark.parametrize(
    "content, message",
    [
        ("file,label\nx.mp4,1\n", "no 'media' column"),
        ("media,start,end\nx.mp4,1,\n", "give both 'start' and 'end'"),
        ("media,start,end\nx.mp4,2,1\n", "end > start"),
        ("media,start,end\nx.mp4,soon,3\n", "'soon' is not a time"),
        ("media\n", "no rows"),
    ],
)
def test_bad_manifests_name_the_line(tmp_path, content, message):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(MediaError, match=message):
        manifest_jobs(tmp_path / "m.csv")


def test_labels_must_name_extracted_segments(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "a.srt").write_text(SRT)
    jobs, _ = source_jobs(tmp_path)
    (tmp_path / "labels.csv").write_text("utterance_id,label,split\na_1,0.5,train\n")
    labelled = apply_labels(jobs, tmp_path / "labels.csv")
    assert labelled[0].segments[0].label == "0.5" and labelled[0].segments[0].split == "train" and labelled[0].segments[1].label is None
    (tmp_path / "labels.csv").write_text("utterance_id,label\na_9,1\n")
    with pytest.raises(MediaError, match="not among the extracted segments, e.g. a_9"):
        apply_labels(jobs, tmp_path / "labels.csv")
