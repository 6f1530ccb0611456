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


def test_report_paths_are_relative_to_the_report_folder_and_still_open(scores, tmp_path):
    out = tmp_path / "reports" / "peer"
    problems = [
        ManifestProblem(4, "image: missing", image=str(tmp_path / "gone.png")),
        ManifestProblem(5, "bad"),
    ]
    report = build_report(scores, problems, "rec", "clip", relative_to=out)
    assert [(i["image"], i["reference"]) for i in report["images"]] == [
        ("../../g1.png", "../../ref_a.png"),
        ("../../g2.png", "../../ref_a.png"),
        ("../../g3.png", "../../ref_b.png"),
    ]
    assert [p["image"] for p in report["problems"]] == ["../../gone.png", None]
    written = write_reports(report, out)
    assert json.loads(written["json"].read_text())["images"] == report["images"]
    with Image.open(
        written["contact_sheet"]
    ) as sheet:  # the relative paths were opened from the report folder
        assert sheet.convert("RGB").getpixel((4 + 80, 4 + 40)) == (255, 0, 0)  # identity a's red reference
    absolute = build_report(scores, [], "rec", "clip")  # without a folder, paths stay as given
    assert [i["image"] for i in absolute["images"]] == [s.image for s in scores]


def test_contact_sheet_captions_are_readable():
    from faceclip.evaluation.report import _caption

    face = ImageScore(1, "g.png", "r.png", "p", "a", 0, 0.981, True, 0.9, 31.24, None)
    assert _caption(face) == "ID-Sim 0.98 · CLIP-T 31.2"
    assert (
        _caption(ImageScore(**{**face.to_json(), "face_detected": False, "id_sim": 0.0}))
        == "no face · CLIP-T 31.2"
    )
    assert _caption(ImageScore(**{**face.to_json(), "clip_t": None})) == "ID-Sim 0.98"


def _captured_figure(monkeypatch):
    """Keep the figure a plot function saves, so its axes can be checked."""
    import faceclip.evaluation.report as report_module

    captured = []
    save = report_module._save_figure

    def keep(fig, plt, path):
        captured.append([(ax.get_xlim(), ax.get_ylim(), [t.get_text() for t in ax.texts]) for ax in fig.axes])
        return save(fig, plt, path)

    monkeypatch.setattr(report_module, "_save_figure", keep)
    return captured


def test_plots_of_all_zero_scores_keep_a_full_axis_and_say_why(scores, tmp_path, monkeypatch):
    from faceclip.evaluation.report import plot_id_sim_vs_clip_t

    captured = _captured_figure(monkeypatch)
    zeros = [
        ImageScore(**{**s.to_json(), "id_sim": 0.0, "face_detected": False, "clip_t": 22.0}) for s in scores
    ]
    plot_per_prompt(build_report(zeros, [], "rec", "clip"), tmp_path / "per_prompt.png")
    plot_id_sim_vs_clip_t(zeros, tmp_path / "scatter.png")
    (id_sim, clip_t), (scatter,) = captured
    assert id_sim[0][0] <= 0 and id_sim[0][1] >= 1  # ID-Sim's axis spans 0..1 although every bar is 0
    assert id_sim[2] == ["every image scores 0.00 (no face was detected in any image)"]
    assert clip_t[0][0] <= 0 < 22 < clip_t[0][1] and clip_t[2] == ["every image scores 22.00"]
    assert scatter[1][0] <= 0 and scatter[1][1] >= 1 and scatter[0][0] <= 17 and scatter[0][1] >= 27
    assert scatter[2] == ["every image has ID-Sim 0.00 (no face was detected in any image)"]


def test_plots_of_varied_scores_have_no_note(scores, tmp_path, monkeypatch):
    from faceclip.evaluation.report import plot_id_sim_vs_clip_t

    captured = _captured_figure(monkeypatch)
    plot_per_prompt(build_report(scores, [], "rec", "clip"), tmp_path / "per_prompt.png")
    plot_id_sim_vs_clip_t(scores, tmp_path / "scatter.png")
    assert [texts for figure in captured for _, _, texts in figure] == [[], [], []]
