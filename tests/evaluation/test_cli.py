"""`faceclip eval score` end to end on real files, with a tiny random CLIP saved to a folder."""

import json

from PIL import ImageOps

from faceclip.cli import main


def _manifest(root, astronaut, noise_image):
    astronaut.save(root / "ref.png")
    ImageOps.mirror(astronaut).save(root / "same.png")
    noise_image.save(root / "noise.png")
    lines = [
        json.dumps({"image": "same.png", "reference": "ref.png", "prompt": "a portrait of a person"}),
        "not json",
        json.dumps({"image": "noise.png", "reference": "ref.png", "prompt": "a person on the moon"}),
        json.dumps({"image": "gone.png", "reference": "ref.png", "prompt": "a portrait of a person"}),
    ]
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    return root / "m.jsonl"


def test_eval_score_writes_all_reports_and_reports_bad_lines(
    tmp_path, astronaut, noise_image, tiny_clip_dir, capsys
):
    manifest = _manifest(tmp_path, astronaut, noise_image)
    out = tmp_path / "report"
    code = main(["eval", "score", "--manifest", str(manifest), "--out", str(out), "--clip-model", str(tiny_clip_dir),
                 "--face-backend", "opencv", "--device", "cpu"])  # fmt: skip
    assert code == 0
    names = {"report.json", "report.md", "per_prompt.png", "id_sim_vs_clip_t.png", "contact_sheet.png"}
    assert names <= {p.name for p in out.iterdir()}
    report = json.loads((out / "report.json").read_text())
    assert report["recognizer"] == "opencv-sface" and report["clip_model"] == str(tiny_clip_dir)
    assert [(i["line"], i["face_detected"]) for i in report["images"]] == [(1, True), (3, False)]
    assert report["images"][0]["id_sim"] > 0.9 and report["images"][1]["id_sim"] == 0.0
    assert report["aggregates"]["overall"]["no_face_rate"] == 0.5
    assert [p["line"] for p in report["problems"]] == [2, 4]
    # Paths are relative to the report's folder, as in `eval run`'s report.
    assert [(i["image"], i["reference"]) for i in report["images"]] == [("../same.png", "../ref.png"),
                                                                        ("../noise.png", "../ref.png")]  # fmt: skip
    assert report["problems"][1]["image"] == "../gone.png" and report["settings"]["manifest"] == "../m.jsonl"
    err = capsys.readouterr().err
    assert "scored 2 image(s)" in err and "2 problem(s)" in err and "report.md" in err

    again = ["eval", "score", "--manifest", str(manifest), "--out", str(out), "--no-clip", "--strict",
             "--face-backend", "opencv", "--no-contact-sheet"]  # fmt: skip
    before = (out / "report.json").read_bytes()
    assert main(again) == 2  # a second run into the folder keeps the first report
    assert (
        "already holds a report" in capsys.readouterr().err and (out / "report.json").read_bytes() == before
    )
    strict = main([*again, "--overwrite"])
    assert strict == 1
    assert json.loads((out / "report.json").read_text())["clip_model"] is None


def test_eval_score_user_errors_are_one_line_messages(tmp_path, astronaut, noise_image, capsys):
    assert main(["eval", "score", "--manifest", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)]) == 2
    assert "--manifest" in capsys.readouterr().err
    manifest = _manifest(tmp_path, astronaut, noise_image)
    code = main(["eval", "score", "--manifest", str(manifest), "--out", str(tmp_path / "o"),
                 "--clip-model", str(tmp_path / "no-clip-here"), "--face-backend", "opencv"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Could not find the CLIP model" in err and "Traceback" not in err  # nothing scored


def test_cli_default_clip_model_matches_the_library():
    from faceclip.cli.evaluate import DEFAULT_CLIP_MODEL
    from faceclip.evaluation import DEFAULT_CLIP_MODEL as LIBRARY_DEFAULT

    assert DEFAULT_CLIP_MODEL == LIBRARY_DEFAULT
