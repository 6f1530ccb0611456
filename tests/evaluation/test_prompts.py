import pytest

from faceclip.evaluation.prompts import PROMPT_SETS, load_prompts


@pytest.mark.parametrize("name", PROMPT_SETS)
def test_shipped_lists_load_and_are_distinct(name):
    prompts = load_prompts(name)
    assert len(prompts) >= 20
    assert len(set(prompts)) == len(prompts)
    assert all(p == p.strip() and not p.startswith("#") and "person" in p for p in prompts)


def test_portrait_prompts_keep_the_face_in_view():
    words = ("portrait", "face", "close-up", "head-and-shoulders", "selfie", "passport")
    assert all(any(word in p for word in words) for p in load_prompts("portrait"))


def test_a_user_file_skips_blank_lines_and_comments(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# my prompts\n\n  a person reading  \n# another\na person running\n")
    assert load_prompts(path) == ["a person reading", "a person running"]
    path.write_text("\ufeffa person reading\r\n", encoding="utf-8")  # as some editors save it
    assert load_prompts(path) == ["a person reading"]
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="holds no prompt"):
        load_prompts(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="portrait, scenes"):
        load_prompts(tmp_path / "missing.txt")
