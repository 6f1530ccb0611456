"""`faceclip eval run` end to end on the tiny random pipeline (its images are noise, so they have no face)."""

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from faceclip.cli import main
from faceclip.evaluation.run import (
    GridCell,
    Identity,
    StaleImagesError,
    cell_metadata,
    file_sha256,
    find_identities,
    find_stale_images,
    generate_cells,
    grid_manifest,
    metadata_mismatch,
    plan_grid,
)
from faceclip.face import NoFaceFoundError
from faceclip.generation import GenerationSettings
from faceclip.outputs import read_png_metadata, save_png
from faceclip.pipelines.sdxl.family import DEFAULTS


def test_plan_grid_and_manifest_numbering(tmp_path):
    ids = [Identity("a", tmp_path / "a.png"), Identity("b", tmp_path / "b.png")]
    cells = plan_grid(ids, ["p0", "p1"], [5, 6], baselines=True)
    assert len(cells) == 2 * 2 + 2 and cells[-1].identity is None
    entries = grid_manifest(cells, tmp_path)
    assert [e.line for e in entries] == list(range(1, 9))
    assert [(e.identity, e.prompt, e.seed) for e in entries[:3]] == [
        ("a", "p0", 5),
        ("a", "p0", 6),
        ("a", "p1", 5),
    ]
    assert entries[0].image == tmp_path / "images" / "a" / "p000_seed5.png"
    assert entries[3].baseline == tmp_path / "baselines" / "p001_seed6.png"
    assert GridCell(None, 2, "p", (0,)).image_path(tmp_path, 0) == tmp_path / "baselines" / "p002_seed0.png"


def test_find_identities(tmp_path):
    with pytest.raises(FileNotFoundError, match="--identities"):
        find_identities(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no image"):
        find_identities(tmp_path)
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert [i.name for i in find_identities(tmp_path)] == ["a", "b"]
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="share the name"):
        find_identities(tmp_path)


class RecordingPipeline:
    """Stands in for the pipeline to check how cells are turned into calls (the real one runs in the slow test)."""

    device = torch.device("cpu")
    dtype = torch.float32
    default_size = (8, 8)
    generation_defaults = DEFAULTS

    def __init__(self):
        self.calls, self.prepared = [], []

    def prepare_face(self, reference):
        self.prepared.append(reference.name)
        if reference.name.startswith("noface"):
            raise NoFaceFoundError(f"No face found in {reference}")
        return f"face:{reference.name}"

    def __call__(self, num_images_per_prompt, generator, **kwargs):
        keep = ("face_image", "prompt", "num_inference_steps", "height")
        self.calls.append(
            {"n": num_images_per_prompt, "seeds": [g.initial_seed() for g in generator]}
            | {key: kwargs[key] for key in keep}
        )
        return SimpleNamespace(images=[Image.new("RGB", (8, 8), "gray")] * num_images_per_prompt)


def test_generate_cells_seeds_resume_and_failures(tmp_path):
    ids = [Identity("a", tmp_path / "a.png"), Identity("noface", tmp_path / "noface.png")]
    (tmp_path / "a.png").write_bytes(b"photo of a")
    (tmp_path / "noface.png").write_bytes(b"photo of a wall")
    cells = plan_grid(ids, ["p0", "p1"], [3, 4])
    pipe = RecordingPipeline()
    (tmp_path / "images" / "a").mkdir(parents=True)
    settings = GenerationSettings(("p0", "p1"), (3, 4), num_inference_steps=2, height=64).resolve(pipe)
    made = cell_metadata(pipe, cells[1], 3, settings, "m", file_sha256(tmp_path / "a.png"))
    save_png(
        Image.new("RGB", (8, 8)), tmp_path / "images" / "a" / "p001_seed3.png", made
    )  # already made: kept
    assert find_stale_images(pipe, cells, tmp_path, settings, model="m") == []
    results = generate_cells(pipe, cells, tmp_path, settings, model="m", progress=False)

    assert [r.error is None for r in results] == [True, True, False, False]
    assert results[2].error.startswith("not generated: No face found")
    assert pipe.prepared == ["a.png", "noface.png"]  # once per identity, also when it fails
    assert pipe.calls == [
        {
            "n": 2,
            "seeds": [3, 4],
            "face_image": "face:a.png",
            "prompt": "p0",
            "num_inference_steps": 2,
            "height": 64,
        },
        {
            "n": 1,
            "seeds": [4],
            "face_image": "face:a.png",
            "prompt": "p1",
            "num_inference_steps": 2,
            "height": 64,
        },
    ]
    metadata = read_png_metadata(tmp_path / "images" / "a" / "p001_seed4.png")
    assert (
        metadata["seed"] == 4
        and metadata["prompt"] == "p1"
        and metadata["model"] == "m"
        and metadata["identity"] == "a"
        and metadata["steps"] == 2
        and metadata["size"] == "64x8"
        and metadata["face_sha256"] == file_sha256(tmp_path / "a.png")
    )

    again = generate_cells(pipe, cells[:2], tmp_path, settings, model="m", progress=False)
    assert len(pipe.calls) == 2 and [len(r.paths) for r in again] == [2, 2]


SETTINGS = GenerationSettings(("p0",), (0, 1), num_inference_steps=2)


@pytest.mark.parametrize(
    "change, why",
    [
        ({"settings": GenerationSettings(("p0",), (0, 1), num_inference_steps=3)}, "--steps 2 (this run: 3)"),
        ({"settings": GenerationSettings(("p0",), (0, 1))}, "--steps 2 (this run: 50)"),
        ({"model": "other"}, "--model 'm' (this run: 'other')"),
        ({"prompts": ["another prompt"]}, "prompt 'p0' (this run: 'another prompt')"),
        ({"reference": b"another photo"}, "reference photo (SHA-256)"),
    ],
)
def test_images_made_with_other_settings_are_refused_not_mixed_in(tmp_path, change, why):
    (tmp_path / "a.png").write_bytes(b"photo of a")
    ids = [Identity("a", tmp_path / "a.png")]
    pipe = RecordingPipeline()
    generate_cells(pipe, plan_grid(ids, ["p0"], [0, 1]), tmp_path, SETTINGS, model="m", progress=False)
    image = tmp_path / "images" / "a" / "p000_seed0.png"

    if "reference" in change:
        (tmp_path / "a.png").write_bytes(change["reference"])
    cells = plan_grid(ids, change.get("prompts", ["p0"]), [0, 1])
    settings, model = change.get("settings", SETTINGS), change.get("model", "m")
    stale = find_stale_images(pipe, cells, tmp_path, settings, model=model)
    assert len(stale) == 2 and why in str(StaleImagesError(stale, tmp_path))
    assert "--overwrite" in str(StaleImagesError(stale, tmp_path))

    before = image.read_bytes()
    generate_cells(pipe, cells, tmp_path, settings, model=model, progress=False)  # images there: kept
    assert len(pipe.calls) == 1 and image.read_bytes() == before
    generate_cells(pipe, cells, tmp_path, settings, model=model, overwrite=True, progress=False)
    assert len(pipe.calls) == 2
    assert find_stale_images(pipe, cells, tmp_path, settings, model=model) == []  # now they match


def test_an_image_without_faceclip_metadata_is_not_taken_for_a_finished_one(tmp_path):
    (tmp_path / "a.png").write_bytes(b"photo of a")
    cells = plan_grid([Identity("a", tmp_path / "a.png")], ["p0"], [0])
    (tmp_path / "images" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a" / "p000_seed0.png")
    (tmp_path / "images" / "a" / "p000_seed1.png").write_bytes(b"not a png")
    pipe = RecordingPipeline()
    [(_, why)] = find_stale_images(pipe, cells, tmp_path, SETTINGS)
    assert "no faceclip metadata" in why
    damaged = [GridCell(cells[0].identity, 0, "p0", (1,))]
    [(_, why)] = find_stale_images(pipe, damaged, tmp_path, SETTINGS)
    assert "cannot be read" in why


def test_metadata_mismatch_ignores_the_reference_path_and_version_only():
    cell = GridCell(Identity("a", Path("ids/a.png")), 0, "p", (0,))
    pipe = RecordingPipeline()
    made = cell_metadata(pipe, cell, 0, SETTINGS.resolve(pipe), "m", "abc")
    moved = {**made, "reference": "/elsewhere/ids/a.png", "face_file": "b.png", "faceclip_version": "0.0.1"}
    assert metadata_mismatch(moved, made) is None
    assert metadata_mismatch({**made, "seed": 1}, made) == "seed 1 (this run: 0)"
    assert (
        metadata_mismatch({**made, "dtype": "bfloat16"}, made) == "--dtype 'bfloat16' (this run: 'float32')"
    )
    no_dtype = {k: v for k, v in made.items() if k != "dtype"}
    assert metadata_mismatch(made, no_dtype) == "--dtype 'float32' (this run: not recorded)"


def _run_args(tmp_path, astronaut, noise_image, clip_dir, out_name="run"):
    identities = tmp_path / "identities"
    identities.mkdir(exist_ok=True)
    astronaut.save(identities / "astronaut.png")
    noise_image.save(identities / "zz_noface.png")  # a reference without a face: its lines become problems
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# comment\na portrait of a person\n")
    out = tmp_path / out_name
    args = ["eval", "run", "--model", "tiny-random", "--identities", str(identities), "--prompts", str(prompts),
            "--seeds", "2", "--steps", "2", "--size", "64x64", "--clip-i", "--out", str(out),
            "--clip-model", str(clip_dir), "--face-backend", "opencv", "--device", "cpu"]  # fmt: skip
    return args, out


def _check_run_folder(out):
    names = {
        "report.json",
        "report.md",
        "per_prompt.png",
        "id_sim_vs_clip_t.png",
        "contact_sheet.png",
        "manifest.jsonl",
    }
    assert names <= {p.name for p in out.iterdir()}
    images = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png") if p.parent != out)
    assert images == [
        "baselines/p000_seed0.png",
        "baselines/p000_seed1.png",
        "images/astronaut/p000_seed0.png",
        "images/astronaut/p000_seed1.png",
    ]
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(m["identity"], m["seed"]) for m in manifest] == [("astronaut", 0), ("astronaut", 1), ("zz_noface", 0),
                                                              ("zz_noface", 1)]  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["model"] == "tiny-random" and report["recognizer"] == "opencv-sface"
    assert [(i["line"], i["face_detected"], i["id_sim"]) for i in report["images"]] == [
        (1, False, 0.0),
        (2, False, 0.0),
    ]
    assert all(i["clip_t"] is not None and i["clip_i"] is not None for i in report["images"])
    assert report["aggregates"]["overall"]["no_face_rate"] == 1.0
    assert [(p["line"], p["message"][:14]) for p in report["problems"]] == [
        (3, "not generated:"),
        (4, "not generated:"),
    ]
    return report


@pytest.mark.slow
def test_eval_run_tiny_random_writes_every_report_file(tmp_path, astronaut, noise_image, tiny_clip_dir):
    args, out = _run_args(tmp_path, astronaut, noise_image, tiny_clip_dir)
    assert main(args) == 0
    _check_run_folder(out)

    # A second run keeps the images already made (resume) and scores them again.
    first = out / "images" / "astronaut" / "p000_seed0.png"
    stamp = first.stat().st_mtime_ns
    assert main([*args, "--no-clip"]) == 0
    assert first.stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_eval_run_split_across_two_processes_matches_one(
    tmp_path, astronaut, noise_image, tiny_clip_dir, free_port, run_launcher
):
    # Two CPU processes joined by torchrun (gloo); on GPUs `accelerate launch --multi_gpu` does the same.
    args, out = _run_args(tmp_path, astronaut, noise_image, tiny_clip_dir)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
              "--master_port", free_port, "-m", "faceclip"]  # fmt: skip
    done = run_launcher([*launch, *args], env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    two = _check_run_folder(out)
    assert two["settings"]["processes"] == 2

    args, single = _run_args(tmp_path, astronaut, noise_image, tiny_clip_dir, out_name="single")
    assert main(args) == 0
    one = json.loads((single / "report.json").read_text())
    assert one["settings"]["processes"] == 1
    for image in ("images/astronaut/p000_seed1.png", "baselines/p000_seed0.png"):
        a, b = (np.asarray(Image.open(folder / image), dtype=np.int16) for folder in (single, out))
        assert (
            np.abs(a - b).max() <= 1
        )  # same seeds; float sums may round differently with other thread counts
    assert [i["clip_t"] for i in one["images"]] == pytest.approx(
        [i["clip_t"] for i in two["images"]], abs=0.2
    )


def test_eval_run_missing_model_is_a_clear_error(tmp_path, astronaut, noise_image, tiny_clip_dir, capsys):
    args, out = _run_args(tmp_path, astronaut, noise_image, tiny_clip_dir)
    args[args.index("tiny-random")] = str(tmp_path / "no-such-model")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "no-such-model" in err and "Traceback" not in err
    assert not (out / "report.json").exists()


def test_eval_run_user_errors(tmp_path, capsys):
    assert main(["eval", "run", "--identities", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "--identities" in capsys.readouterr().err
    assert (
        main(["eval", "run", "--identities", str(tmp_path), "--seeds", "0", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "--seeds must be at least 1" in capsys.readouterr().err


class PhotoPipeline(RecordingPipeline):
    """A stand-in loaded by `eval run` that "generates" the reference photo itself, so ID-Sim finds the face."""

    def __init__(self, photo):
        super().__init__()
        self.photo = photo

    def to(self, device):
        return self

    def set_progress_bar_config(self, **kwargs):
        pass

    def __call__(self, num_images_per_prompt, generator, **kwargs):
        super().__call__(num_images_per_prompt, generator, **kwargs)
        return SimpleNamespace(images=[self.photo] * num_images_per_prompt)


@pytest.fixture
def photo_pipeline(monkeypatch, astronaut):
    import faceclip.cli.evaluate

    pipe = PhotoPipeline(astronaut)
    monkeypatch.setattr(faceclip.cli.evaluate, "load_model", lambda args, dtype, command: (pipe, None))
    return pipe


def test_manifest_of_eval_run_with_relative_paths_scores_from_another_directory(
    tmp_path, astronaut, photo_pipeline, monkeypatch
):
    work = tmp_path / "work"
    (work / "ids").mkdir(parents=True)
    astronaut.save(work / "ids" / "astronaut.png")
    (work / "prompts.txt").write_text("a portrait of a person\n")
    monkeypatch.chdir(work)
    common = ["--no-clip", "--face-backend", "opencv", "--device", "cpu", "--no-contact-sheet"]
    assert main(["eval", "run", "--model", "stand-in", "--identities", "ids", "--prompts", "prompts.txt",
                 "--seeds", "2", "--out", "er", *common]) == 0  # fmt: skip
    assert len(json.loads((work / "er" / "report.json").read_text())["images"]) == 2

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    manifest = "../work/er/manifest.jsonl"
    assert main(["eval", "score", "--manifest", manifest, "--out", "rescored", *common]) == 0
    report = json.loads((elsewhere / "rescored" / "report.json").read_text())
    assert report["problems"] == []
    assert [(i["identity"], i["face_detected"]) for i in report["images"]] == [("astronaut", True)] * 2


def test_eval_run_and_eval_score_write_the_same_paths_relative_to_the_report(
    tmp_path, astronaut, photo_pipeline, monkeypatch
):
    work = tmp_path / "work"
    (work / "ids").mkdir(parents=True)
    astronaut.save(work / "ids" / "astronaut.png")
    (work / "prompts.txt").write_text("a portrait of a person\n")
    monkeypatch.chdir(work)
    common = ["--no-clip", "--face-backend", "opencv", "--device", "cpu", "--no-contact-sheet"]
    assert main(["eval", "run", "--model", "stand-in", "--identities", "ids", "--prompts", "prompts.txt",
                 "--seeds", "2", "--out", "er", *common]) == 0  # fmt: skip
    ran = json.loads((work / "er" / "report.json").read_text())
    expected = [("images/astronaut/p000_seed0.png", "../ids/astronaut.png"),
                ("images/astronaut/p000_seed1.png", "../ids/astronaut.png")]  # fmt: skip
    assert [(i["image"], i["reference"]) for i in ran["images"]] == expected
    assert (ran["settings"]["identities"], ran["settings"]["prompts"]) == ("../ids", "../prompts.txt")

    # Scored again into the same folder from elsewhere, with an absolute manifest path: the same paths.
    monkeypatch.chdir(tmp_path)
    manifest = str(work / "er" / "manifest.jsonl")
    assert main(["eval", "score", "--manifest", manifest, "--out", "work/er", "--overwrite", *common]) == 0
    scored = json.loads((work / "er" / "report.json").read_text())
    assert [(i["image"], i["reference"]) for i in scored["images"]] == expected
    assert scored["settings"]["manifest"] == "manifest.jsonl"
    # Into another folder: relative to that folder, naming the same files.
    assert main(["eval", "score", "--manifest", manifest, "--out", "work/er/again", *common]) == 0
    again = json.loads((work / "er" / "again" / "report.json").read_text())
    assert [(i["image"], i["reference"]) for i in again["images"]] == [
        ("../" + image, "../" + reference) for image, reference in expected
    ]


def test_eval_run_refuses_to_mix_in_images_of_other_settings(tmp_path, astronaut, photo_pipeline, capsys):
    (tmp_path / "ids").mkdir()
    astronaut.save(tmp_path / "ids" / "astronaut.png")
    (tmp_path / "prompts.txt").write_text("a portrait of a person\n")
    out = tmp_path / "run"
    args = ["eval", "run", "--model", "stand-in", "--identities", str(tmp_path / "ids"), "--prompts",
            str(tmp_path / "prompts.txt"), "--seeds", "1", "--out", str(out), "--no-clip", "--face-backend",
            "opencv", "--device", "cpu", "--no-contact-sheet"]  # fmt: skip
    assert main([*args, "--steps", "2"]) == 0
    image, report = out / "images" / "astronaut" / "p000_seed0.png", out / "report.json"
    before = (image.read_bytes(), report.read_bytes())
    capsys.readouterr()

    assert main([*args, "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert "1 image(s) already in" in err and "--steps 2 (this run: 3)" in err and "--overwrite" in err
    assert "Traceback" not in err and len(photo_pipeline.calls) == 1
    assert (image.read_bytes(), report.read_bytes()) == before  # the earlier run is untouched
    # (--overwrite then regenerates: test_images_made_with_other_settings_are_refused_not_mixed_in)


@pytest.mark.slow
def test_eval_run_and_generate_share_their_defaults(tmp_path, astronaut, capsys):
    """`eval run` and `generate` with no settings given make the same image: same size, steps, guidance, seed."""
    (tmp_path / "ids").mkdir()
    astronaut.save(tmp_path / "ids" / "astronaut.png")
    (tmp_path / "prompts.txt").write_text("a portrait of a person\n")
    run = ["eval", "run", "--model", "tiny-random", "--identities", str(tmp_path / "ids"), "--prompts",
           str(tmp_path / "prompts.txt"), "--seeds", "1", "--out", str(tmp_path / "run"), "--no-clip",
           "--face-backend", "opencv", "--device", "cpu", "--no-contact-sheet"]  # fmt: skip
    assert main(run) == 0
    generate = ["generate", "--model", "tiny-random", "--face", str(tmp_path / "ids" / "astronaut.png"),
                "--prompt", "a portrait of a person", "--seed", "0", "--device", "cpu", "--out", str(tmp_path / "gen")]  # fmt: skip
    assert main(generate) == 0
    evaluated = read_png_metadata(tmp_path / "run" / "images" / "astronaut" / "p000_seed0.png")
    generated = read_png_metadata(tmp_path / "gen" / "p000_seed0.png")
    shared = (
        "prompt",
        "negative_prompt",
        "seed",
        "steps",
        "guidance",
        "size",
        "face_sha256",
        "scheduler",
        "dtype",
    )
    assert {k: evaluated[k] for k in shared} == {k: generated[k] for k in shared}
    assert (evaluated["size"], evaluated["steps"]) == ("72x56", 50)
    a, b = (
        np.asarray(Image.open(p), dtype=np.int16)
        for p in (
            tmp_path / "run" / "images" / "astronaut" / "p000_seed0.png",
            tmp_path / "gen" / "p000_seed0.png",
        )
    )
    assert np.abs(a - b).max() <= 1
