"""The downloader, run for real against a local HTTP mirror of ../shared/datasets."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from pathlib import Path

import pytest

from imsa.data.download import (
    download,
    list_status,
    remote_files,
    require_files,
    sha256_file,
    verify,
)
from imsa.data.registry import list_datasets
from imsa.errors import ConfigError, DataError

MOSI = remote_files("mosi-bclstm")
IEMOCAP_LABELS = remote_files("iemocap4-text")
AUDIO_TEST = "cmu-mosi/bc-lstm/audio/audio_test0.csv"


@pytest.fixture(scope="module")
def shared(data_root) -> Path:
    """The real data ($IMSA_DATA or ../shared/datasets), served as the mirror."""
    return data_root


@pytest.fixture
def serve():
    """Start a local HTTP server for a folder; return its base URL and the list of paths it was asked for."""
    servers = []

    def start(directory: Path) -> tuple[str, list[str]]:
        requested: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                requested.append(self.path.lstrip("/"))
                super().do_GET()

            def log_message(self, *args):  # keep pytest output clean
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
        # A short poll interval keeps shutdown() from waiting the default half second.
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/", requested

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def copy_files(source: Path, dest: Path, paths) -> None:
    for rel in paths:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, dest / rel)


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100:110] = bytes(b ^ 0xFF for b in data[100:110])
    path.write_bytes(bytes(data))


def all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_pinned_addresses_are_well_formed():
    downloadable = [entry for entry in list_datasets() if entry.files]
    assert {entry.name for entry in downloadable} == {"mosi-bclstm", "mosi-transcripts", "mosi-misa", "mosi-misa-tokens", "iemocap4-text", "iemocap6-text"}
    for entry in downloadable:
        for remote in entry.files:
            assert re.fullmatch(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/.+", remote.url)
            assert re.fullmatch(r"[0-9a-f]{64}", remote.sha256)
    assert len(MOSI) == 10 and len(IEMOCAP_LABELS) == 2 and remote_files("iemocap6-text") == IEMOCAP_LABELS


def test_download_verify_and_skip(shared, serve, tmp_path):
    mirror, requested = serve(shared)
    calls = []
    status = download("mosi-bclstm", tmp_path, mirror=mirror, progress=lambda *a: calls.append(a))
    assert status == {remote.path: "downloaded" for remote in MOSI}
    assert sorted(requested) == sorted(remote.path for remote in MOSI)
    assert verify("mosi-bclstm", tmp_path) == {remote.path: "ok" for remote in MOSI}
    assert all_files(tmp_path) == {remote.path for remote in MOSI}  # no temp files left
    # Progress ends at the full size of each file.
    last = {path: (done, total) for path, done, total in calls}
    assert last[AUDIO_TEST] == ((shared / AUDIO_TEST).stat().st_size,) * 2

    requested.clear()
    assert download("mosi-transcripts", tmp_path, mirror=mirror) == {remote.path: "ok" for remote in MOSI}
    assert requested == []
    assert require_files("mosi-bclstm", tmp_path)[AUDIO_TEST] == (tmp_path / AUDIO_TEST).absolute()
    rows = {row["dataset"]: row for row in list_status(tmp_path)}
    assert rows["mosi-bclstm"]["present"] == 10 and rows["iemocap4-text"]["present"] == 0


def test_corrupted_mirror_writes_nothing(shared, serve, tmp_path, monkeypatch):
    mirror_dir, dest = tmp_path / "mirror", tmp_path / "dest"
    # Files before audio_test0 are already in place, so the mirror needs only the corrupted one.
    before = [remote.path for remote in MOSI[: [r.path for r in MOSI].index(AUDIO_TEST)]]
    copy_files(shared, dest, before)
    copy_files(shared, mirror_dir, [AUDIO_TEST])
    flip_bytes(mirror_dir / AUDIO_TEST)
    mirror, _ = serve(mirror_dir)
    monkeypatch.setenv("IMSA_MIRROR", mirror)  # the environment variable stands in for mirror=

    with pytest.raises(DataError, match="sha256") as err:
        download("mosi-bclstm", dest)
    assert AUDIO_TEST in str(err.value) and mirror in str(err.value)
    assert not (dest / AUDIO_TEST).exists()
    assert all_files(dest) == set(before)  # no temp files left behind


def test_force_with_corrupted_mirror_keeps_good_copy(shared, serve, tmp_path):
    mirror_dir, dest = tmp_path / "mirror", tmp_path / "dest"
    first = MOSI[0].path
    copy_files(shared, dest, [first])
    copy_files(shared, mirror_dir, [first])
    flip_bytes(mirror_dir / first)
    mirror, requested = serve(mirror_dir)

    with pytest.raises(DataError, match="sha256"):
        download("mosi-bclstm", dest, mirror=mirror, force=True)
    assert requested == [first]
    assert (dest / first).read_bytes() == (shared / first).read_bytes()
    assert all_files(dest) == {first}


def test_interrupt_leaves_no_partial_file(shared, serve, tmp_path):
    mirror, _ = serve(shared)

    def interrupt(path, done, total):
        if done:  # after the first chunk has been written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download("iemocap4-text", tmp_path, mirror=mirror, progress=interrupt)
    assert all_files(tmp_path) == set()


def test_missing_on_mirror_names_url(serve, tmp_path):
    mirror_dir = tmp_path / "empty-mirror"
    mirror_dir.mkdir()
    mirror, _ = serve(mirror_dir)
    with pytest.raises(DataError, match="404") as err:
        download("iemocap4-text", tmp_path / "dest", mirror=mirror)
    assert mirror.rstrip("/") + "/" + IEMOCAP_LABELS[0].path in str(err.value)
    assert all_files(tmp_path / "dest") == set()


def test_unreachable_mirror_is_data_error(tmp_path):
    with pytest.raises(DataError, match="127.0.0.1:9"):
        download("iemocap4-text", tmp_path, mirror="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="mirror"):
        download("iemocap4-text", tmp_path, mirror="not-a-url")


def test_require_files_on_empty_root(tmp_path):
    with pytest.raises(DataError, match="imsa data download iemocap6-text") as err:
        require_files("iemocap6-text", tmp_path)
    assert str(tmp_path) in str(err.value) and "IMSA_DATA" in str(err.value)


def test_verify_reports_corrupted_and_missing(shared, tmp_path):
    four_way, six_way = (remote.path for remote in IEMOCAP_LABELS)
    copy_files(shared, tmp_path, [four_way, six_way])
    assert verify("iemocap4-text", tmp_path) == {four_way: "ok", six_way: "ok"}
    flip_bytes(tmp_path / four_way)
    (tmp_path / six_way).unlink()
    assert verify("iemocap4-text", tmp_path) == {four_way: "corrupted", six_way: "missing"}
    assert sha256_file(shared / six_way) == IEMOCAP_LABELS[1].sha256


@pytest.mark.parametrize("call", [verify, require_files, download])
def test_unknown_name_lists_valid_names(call, tmp_path):
    with pytest.raises(ConfigError) as err:
        call("mosei", tmp_path)
    for name in ("mosi-bclstm", "mosi-transcripts", "iemocap4-text", "iemocap6-text"):
        assert name in str(err.value)
