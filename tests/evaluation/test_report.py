import json

import pytest
from PIL import Image

from faceclip.evaluation.manifest import ManifestProblem
from faceclip.evaluation.metrics import ImageScore
from faceclip.evaluation.report import (
    REPORT_FILES,
    build_report,
    make_contact_sheet,
    plot_per_prompt,
    render_markdown,
    write_reports,
)


@pytest.fixture
def scores(tmp_path):
    paths = {}
    for name, color in (
        ("ref_a", "red"),
        ("ref_b", "blue"),
        ("g1", "green"),
        ("g2", "yellow"),
        ("g3", "white"),
    ):
        paths[name] = tmp_path / f"{name}.png"
        Image.new("RGB", (48, 64), color).save(paths[name])
    return [
        ImageScore(1, str(paths["g1"]), str(paths["ref_a"]), "p | one", "a", 0, 0.7, True, 0.9, 30.0, None),
        ImageScore(2, str(paths["g2"]), str(paths["ref_a"]), "p two", "a", 1, 0.0, False, None, 20.0, None),
        ImageScore(3, str(paths["g3"]), str(paths["ref_b"]), "p | one", "b", 0, 0.5, True, 0.8, 25.0, None),
    ]


def test_report_json_holds_every_image_the_aggregates_and_the_problems(scores):
    problems = [ManifestProblem(4, "image: missing", image="x.png")]
    report = build_report(scores, problems, "opencv-sface", "tiny-clip", {"manifest": "m.jsonl"})
    assert report["recognizer"] == "opencv-sface" and report["clip_model"] == "tiny-clip"
    assert report["counts"] == {"scored": 3, "problems": 1}
    assert [image["line"] for image in report["images"]] == [1, 2, 3]
    assert report["problems"] == [{"line": 4, "message": "image: missing", "image": "x.png"}]
    overall = report["aggregates"]["overall"]
    assert overall["id_sim"]["mean"] == pytest.approx(0.4)
    assert overall["no_face_rate"] == pytest.approx(1 / 3)
    assert set(report["aggregates"]["per_prompt"]) == {"p | one", "p two"}
    assert set(report["aggregates"]["per_identity"]) == {"a", "b"}
    json.dumps(report)  # JSON-ready


def test_write_reports_writes_every_file(scores, tmp_path):
    report = build_report(scores, [], "opencv-sface", "tiny-clip")
    written = write_reports(report, tmp_path / "out")
    assert set(written) == set(REPORT_FILES)
    for kind, path in written.items():
        assert path.name == REPORT_FILES[kind] and path.stat().st_size > 0
    assert json.loads(written["json"].read_text())["counts"]["scored"] == 3
    markdown = written["markdown"].read_text()
    assert "| CLIP-T | 25.00 |" in markdown
    assert all(
        f"]({name})" in markdown for name in ("per_prompt.png", "id_sim_vs_clip_t.png", "contact_sheet.png")
    )
    for kind in ("per_prompt_plot", "scatter_plot", "contact_sheet"):
        with Image.open(written[kind]) as image:
            assert image.format == "PNG" and image.width > 100
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


def test_a_plot_that_fails_leaves_the_earlier_one(scores, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    report = build_report(scores, [], "opencv-sface", "tiny-clip")
    path = plot_per_prompt(report, tmp_path / "per_prompt.png")
    before = path.read_bytes()

    def broken_savefig(self, target, **kwargs):
        target.write(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_per_prompt(report, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_markdown_tables(scores):
    text = render_markdown(build_report(scores, [ManifestProblem(9, "bad | line")], "rec", None))
    assert "| ID-Sim | 0.4000 |" in text
    assert "| no-face rate | 0.333 |" in text
    assert "| p \\| one | 2 |" in text  # pipes in prompts are escaped
    assert "- line 9: bad \\| line" in text
    assert "## Per identity" in text


def test_without_clip_the_scatter_is_skipped(scores, tmp_path):
    no_clip = [ImageScore(**{**s.to_json(), "clip_t": None}) for s in scores]
    written = write_reports(build_report(no_clip, [], "rec", None), tmp_path, contact_sheet=False)
    assert set(written) == {"json", "markdown", "per_prompt_plot"}
    markdown = written["markdown"].read_text()
    assert "`not computed`" in markdown and "| CLIP-T | " not in markdown.split("## Per prompt")[0]
    assert "(per_prompt.png)" in markdown and ".png)" not in markdown.replace("(per_prompt.png)", "")


def test_an_empty_report_still_writes_json_and_markdown(tmp_path):
    written = write_reports(build_report([], [ManifestProblem(1, "not valid JSON")], "rec", None), tmp_path)
    assert set(written) == {"json", "markdown"}


def test_contact_sheet_has_a_row_per_identity_reference_first(scores):
    sheet = make_contact_sheet(scores, cell=40)
    # 2 identities x (reference + up to 2 generations) cells of 40 px, 4 px padding (faceclip.outputs.make_grid)
    assert sheet.size == (3 * 40 + 4 * 4, 2 * 40 + 3 * 4)
    assert sheet.getpixel((4 + 20, 4 + 10)) == (255, 0, 0)  # row a starts with its red reference
    assert sheet.getpixel((4 + 20, 48 + 10)) == (0, 0, 255)  # row b starts with its blue reference
    assert sheet.getpixel((4 + 2 * 44 + 20, 48 + 10)) == (255, 255, 255)  # row b has one generation only
