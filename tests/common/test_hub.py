from pathlib import Path

import huggingface_hub
import pytest

from faceclip.hub import WeightsNotFoundError, is_offline, resolve_file


def test_local_folder_file_is_found(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.pt").write_bytes(b"x")
    assert resolve_file(tmp_path, "model/w.pt", what="the weights") == tmp_path / "model" / "w.pt"


def test_missing_file_in_local_folder_names_file_folder_and_fix(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_file(tmp_path, "model/w.pt", what="the encoder weights", hint="See docs.")
    text = str(err.value)
    assert "the encoder weights" in text and "model/w.pt" in text and str(tmp_path) in text
    assert "local folder that contains it" in text and "See docs." in text


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no such file or folder") as err:
        resolve_file(tmp_path / "nowhere", "w.pt", what="the weights")
    assert "check the path" in str(err.value) and "hf download" not in str(err.value)


def test_missing_weights_file_with_a_hub_id_shape_is_not_sent_to_the_hub(monkeypatch):
    """'ckpt/face_clip_encoder.pt' looks like 'owner/name' but names a file: no download attempt, no retries."""
    monkeypatch.chdir(Path(__file__).parent)

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked for a local file")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_hub)
    with pytest.raises(WeightsNotFoundError, match="no such file or folder"):
        resolve_file("ckpt/face_clip_encoder.pt", "model/face_clip_encoder.pt", what="the weights")


def _offline(monkeypatch, cache: Path, offline: bool = True) -> None:
    """Offline mode as huggingface_hub sees it (it reads HF_HUB_OFFLINE once, at import), with an empty cache."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def test_is_offline_follows_huggingface_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the variable is read by huggingface_hub, not by us
    _offline(monkeypatch, tmp_path)
    assert is_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _offline(monkeypatch, tmp_path, offline=False)
    assert not is_offline()


def test_offline_hub_id_not_in_cache(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_file("someone/some-model", "model/w.pt", what="the weights")
    text = str(err.value)
    assert "HF_HUB_OFFLINE" in text and "hf download someone/some-model model/w.pt" in text


def test_unreachable_hub_is_tried_once_then_only_the_cache(monkeypatch, tmp_path):
    """A connection failure met while downloading (the quick check saw the hub): later files use the cache only."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    import faceclip.hub as hub

    monkeypatch.setattr(hub, "_unreachable", None)
    monkeypatch.setattr(hub, "_probe_hub", lambda: None)
    monkeypatch.setattr(hub, "_hub_answered", False)
    _offline(monkeypatch, tmp_path, offline=False)
    calls = []

    def fake_download(repo, filename, revision=None, local_files_only=False):
        calls.append(local_files_only)
        try:
            raise ConnectionError("[Errno -2] Name or service not known")
        except ConnectionError as cause:
            raise LocalEntryNotFoundError("cannot find the requested files in the local cache") from cause

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    for filename in ("a.pt", "b.pt"):
        with pytest.raises(WeightsNotFoundError, match="the hub could not be reached"):
            resolve_file("someone/some-model", filename, what="the weights")
    assert calls == [False, True]
    assert "Name or service not known" in hub.hub_unreachable_reason()
