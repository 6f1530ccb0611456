import os
import stat

import pytest
from PIL import Image

from faceclip.outputs import atomic_path, make_grid, read_png_metadata, save_png


def test_save_png_round_trips_metadata_and_uses_normal_permissions(tmp_path):
    image = Image.new("RGB", (8, 6), (10, 20, 30))
    meta = {"prompt": "a photo", "seed": 7, "size": [6, 8]}
    path = save_png(image, tmp_path / "a.png", meta)
    assert read_png_metadata(path) == meta
    with Image.open(path) as reread:
        assert reread.text["prompt"] == "a photo"
        assert reread.text["seed"] == "7"
        assert reread.size == (8, 6)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left behind


def test_save_png_failure_leaves_existing_file_untouched(tmp_path):
    path = tmp_path / "a.png"
    save_png(Image.new("RGB", (4, 4)), path, {"n": 1})
    before = path.read_bytes()
    with pytest.raises(AttributeError):
        save_png("not an image", path, {"n": 2})  # type: ignore[arg-type]
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_make_grid_layout():
    tiles = [Image.new("RGB", (10, 8), (i * 40, 0, 0)) for i in range(5)]
    grid = make_grid(tiles, cols=3, pad=2)
    assert grid.size == (3 * 10 + 4 * 2, 2 * 8 + 3 * 2)
    assert grid.getpixel((2 + 10 + 2, 2)) == (40, 0, 0)
    with pytest.raises(ValueError, match="at least one image"):
        make_grid([])


def test_save_png_without_overwrite_takes_the_next_free_name(tmp_path):
    first = save_png(Image.new("RGB", (4, 4), (1, 1, 1)), tmp_path / "a.png", overwrite=False)
    second = save_png(Image.new("RGB", (4, 4), (2, 2, 2)), tmp_path / "a.png", overwrite=False)
    third = save_png(Image.new("RGB", (4, 4), (3, 3, 3)), tmp_path / "a.png", overwrite=False)
    assert [first.name, second.name, third.name] == ["a.png", "a-2.png", "a-3.png"]
    with Image.open(first) as a, Image.open(third) as c:
        assert a.getpixel((0, 0)) == (1, 1, 1) and c.getpixel((0, 0)) == (3, 3, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-2.png", "a-3.png", "a.png"]


def test_writers_at_once_never_share_a_name(tmp_path):
    """Threads saving to one name at the same moment each get their own file (the name is claimed by a link)."""
    from concurrent.futures import ThreadPoolExecutor

    def write(value: int):
        return save_png(Image.new("L", (2, 2), value), tmp_path / "x.png", {"v": value}, overwrite=False)

    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(write, range(16)))
    assert len(set(paths)) == 16
    assert sorted(read_png_metadata(p)["v"] for p in paths) == list(range(16))


def test_atomic_path_renames_a_written_file_or_folder(tmp_path):
    with atomic_path(tmp_path / "weights.bin") as staging:
        assert not staging.exists() and staging.parent.parent == tmp_path
        staging.write_bytes(b"abc")
    with atomic_path(tmp_path / "model") as staging:
        staging.mkdir()
        (staging / "config.json").write_text("{}")
    assert (tmp_path / "weights.bin").read_bytes() == b"abc"
    assert (tmp_path / "model" / "config.json").read_text() == "{}"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "model" / "config.json").stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "weights.bin"]  # no staging left


def test_atomic_path_failure_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(target) as staging:
        staging.write_bytes(b"partial")
        raise RuntimeError("interrupted")
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(target):
        pass
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]
