"""`faceclip eval`: score generated images (ID-Sim, no-face rate, CLIP-T, CLIP-I) and write reports.

Examples:
    faceclip eval score --manifest runs/peer/manifest.jsonl --out reports/peer
    faceclip eval run --model ByteDance/FaceCLIP --identities unsplash50/ --prompts portrait --seeds 4 --out reports/ours
    accelerate launch --multi_gpu --num_processes 8 -m faceclip eval run ...   # split a grid across 8 GPUs

Each manifest line is a JSON object {"image": ..., "reference": ..., "prompt": ...} (optional: "identity", "seed",
"baseline"); relative paths are read from the manifest's folder.
"""

from __future__ import annotations

import argparse
import logging
import sys

from faceclip.cli._errors import EXIT_BAD_INPUT, CommandError
from faceclip.cli._options import (
    add_base_model_option,
    add_generation_options,
    add_model_option,
    add_overwrite_option,
    load_model,
    require_output_folder,
    settings_errors_as_options,
)

# Same as faceclip.evaluation.DEFAULT_CLIP_MODEL, repeated so that `faceclip --help` imports no torch.
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate identity and prompt fidelity (ID-Sim, CLIP-T) of generated images",
        description="Score generated images with the field's metrics and write report.json, report.md, plots "
        "and a contact sheet.",
    )
    commands = parser.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)

    score = commands.add_parser(
        "score",
        help="score images listed in a manifest (made by any tool)",
        description='Score the images of a JSONL manifest: one {"image", "reference", "prompt"} object per line.',
    )
    score.add_argument("--manifest", required=True, help="JSONL manifest of the images to score")
    score.add_argument("--out", required=True, help="folder for the report files")
    add_overwrite_option(score)
    _add_scoring_arguments(score)
    score.set_defaults(func=run_score)

    grid = commands.add_parser(
        "run",
        help="generate identities x prompts x seeds with our pipeline, then score them",
        description="Generate the evaluation grid with a FaceCLIP pipeline (either family), then score it. Launched with "
        "`accelerate launch`, the grid is split across the processes.",
    )
    add_model_option(grid)
    add_base_model_option(grid)
    grid.add_argument("--identities", required=True, help="folder with one reference face photo per person")
    grid.add_argument(
        "--prompts",
        default="portrait",
        help="text file with one prompt per line, or a shipped list: portrait, scenes",
    )
    grid.add_argument("--seeds", type=int, default=4, help="seeds per identity and prompt (default: 4)")
    grid.add_argument(
        "--first-seed", type=int, default=0, help="the seeds are first-seed, first-seed+1, ... (default: 0)"
    )
    grid.add_argument("--out", required=True, help="run folder: images/, manifest.jsonl and the report files")
    add_generation_options(grid, batch_size=False)
    grid.add_argument("--height", type=int, help=argparse.SUPPRESS)  # before --size; kept working
    grid.add_argument("--width", type=int, help=argparse.SUPPRESS)
    grid.add_argument(
        "--clip-i",
        action="store_true",
        help="also generate each prompt and seed without identity and report CLIP-I",
    )
    grid.add_argument(
        "--overwrite",
        action="store_true",
        help="regenerate images that already exist in --out (needed when they were made with other settings)",
    )
    grid.add_argument(
        "--dtype", default="auto", help="pipeline dtype: auto, fp32, bf16, fp16 (default: auto)"
    )
    _add_scoring_arguments(grid)
    grid.set_defaults(func=run_grid_command)


def _add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clip-model",
        default=DEFAULT_CLIP_MODEL,
        help=f"hub id or local folder of the CLIP for CLIP-T / CLIP-I (default: {DEFAULT_CLIP_MODEL})",
    )
    parser.add_argument("--no-clip", action="store_true", help="skip CLIP-T and CLIP-I (ID-Sim only)")
    parser.add_argument(
        "--face-backend",
        default="auto",
        choices=("auto", "opencv", "insightface"),
        help="face detector and recogniser for ID-Sim (default: auto = insightface when installed, else opencv)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per CLIP batch (default: 16)")
    parser.add_argument("--no-contact-sheet", action="store_true", help="do not write contact_sheet.png")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any manifest line could not be scored"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")


def run_score(args: argparse.Namespace) -> int:
    from pathlib import Path

    from faceclip.evaluation.manifest import read_manifest, relative_path
    from faceclip.evaluation.report import REPORT_FILES

    _check_positive(args, "batch_size")
    require_output_folder(args.out)
    earlier = [name for name in REPORT_FILES.values() if (Path(args.out) / name).exists()]
    if earlier and not args.overwrite:
        raise CommandError(
            f"--out {args.out} already holds a report ({', '.join(earlier)}); choose another --out, or pass "
            "--overwrite to replace it."
        )
    try:
        manifest = read_manifest(args.manifest)
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(f"--manifest {args.manifest}: {err}") from None
    if not manifest.entries and not manifest.problems:
        raise CommandError(
            f"--manifest: manifest {args.manifest} lists no images (only blank or comment lines); write one JSON "
            'object per line, e.g. {"image": "gen.png", "reference": "face.jpg", "prompt": "a portrait"}.'
        )
    for problem in manifest.problems:
        logger.warning("%s:%d: %s", args.manifest, problem.line, problem.message)
    if not manifest.entries:
        raise CommandError(
            f"--manifest: every line of manifest {args.manifest} was dropped: "
            f"{_listed(manifest.problems, args.manifest)}. Nothing was scored; fix those lines."
        )
    settings = {"command": "score", "manifest": relative_path(args.manifest, args.out)}
    return _score_and_report(args, manifest.entries, list(manifest.problems), settings, _process_state(args))


def _listed(problems: list, source: str, limit: int = 3) -> str:
    """The first ``limit`` problems as ``"SOURCE:LINE: message; ..."``, and how many more there are."""
    text = "; ".join(f"{source}:{problem.line}: {problem.message}" for problem in problems[:limit])
    more = len(problems) - limit
    return text + (f"; and {more} more (listed above)" if more > 0 else "")


def run_grid_command(args: argparse.Namespace) -> int:
    """``faceclip eval run``, ending each process of a multi-process run cleanly (see ``cli._process``)."""
    from faceclip.cli._process import finish

    return finish(run_grid(args))


def run_grid(args: argparse.Namespace) -> int:
    from faceclip.devices import resolve_device, resolve_dtype
    from faceclip.evaluation.parallel import process_state

    with settings_errors_as_options({"height": "--size (height)", "width": "--size (width)"}):
        for name in ("seeds", "batch_size"):
            _check_positive(args, name)
        cells, settings = plan(args)
        state = process_state(cpu=True if args.device == "cpu" else None)
        device = state.device if state.num_processes > 1 else resolve_device(args.device)
        pipe = load(args, device, resolve_dtype(args.dtype, device))
        settings = settings.resolve(pipe)
        check_resumable(args, pipe, cells, settings)
        logger.info(
            "grid: %d cells of %d seeds, %d x %d images, %d process(es)", len(cells), len(settings.seeds),
            settings.width, settings.height, state.num_processes,
        )  # fmt: skip
        results = _generate(args, pipe, cells, settings, state)
    return _write_manifest_and_score(args, cells, results, settings, state, pipe)


def plan(args: argparse.Namespace):
    """The grid's cells and its settings (``None``: the model's defaults), from the arguments."""
    from faceclip.cli.generate import parse_size
    from faceclip.evaluation.prompts import load_prompts
    from faceclip.evaluation.run import find_identities, plan_grid
    from faceclip.generation import GenerationSettings, consecutive_seeds

    require_output_folder(args.out)
    identities = find_identities(args.identities)
    prompts = load_prompts(args.prompts)
    height, width = parse_size(args.size) if args.size else (args.height, args.width)
    settings = GenerationSettings(
        prompts=tuple(prompts), seeds=consecutive_seeds(args.first_seed, args.seeds),
        negative_prompt=args.negative_prompt, num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale, true_cfg_scale=args.true_cfg_scale, height=height, width=width,
        batch_size=args.seeds,
    ).validate()  # fmt: skip
    cells = plan_grid(identities, prompts, settings.seeds, baselines=args.clip_i and not args.no_clip)
    return cells, settings


def load(args: argparse.Namespace, device, dtype):
    pipe, _ = load_model(args, dtype, "eval run ...")
    pipe.to(device).set_progress_bar_config(disable=True)
    return pipe


def check_resumable(args: argparse.Namespace, pipe, cells: list, settings) -> None:
    """Without ``--overwrite``, refuse a run folder holding images made with other settings (nothing is mixed)."""
    from pathlib import Path

    from faceclip.evaluation.run import StaleImagesError, find_stale_images

    Path(args.out).mkdir(parents=True, exist_ok=True)
    if not args.overwrite:
        stale = find_stale_images(pipe, cells, args.out, settings, model=str(args.model))
        if stale:
            raise StaleImagesError(stale, args.out)


def _write_manifest_and_score(args, cells, results, settings, state, pipe) -> int:
    """Write ``manifest.jsonl`` (main process) and score the images that could be made."""
    from pathlib import Path

    from faceclip.evaluation.manifest import ManifestProblem, relative_path, write_manifest
    from faceclip.evaluation.run import grid_manifest

    out = Path(args.out)
    entries = grid_manifest(cells, out)
    errors = {}
    for result in results:
        if result.error:
            errors.update({result.cell.image_path(out, seed): result.error for seed in result.cell.seeds})
    problems = [
        ManifestProblem(e.line, errors[e.image], image=str(e.image)) for e in entries if e.image in errors
    ]
    usable = [entry for entry in entries if entry.image not in errors]
    if state.is_main_process:
        write_manifest(entries, out / "manifest.jsonl")
    run_settings = {
        "command": "run",
        "model": str(args.model),
        "identities": relative_path(args.identities, out),
        "prompts": relative_path(args.prompts, out) if Path(args.prompts).is_file() else args.prompts,
        "seeds": list(settings.seeds),
        "generation": {"steps": settings.num_inference_steps, "guidance": settings.guidance_scale,
                       "size": f"{settings.height}x{settings.width}", "negative_prompt": settings.negative_prompt},
        "dtype": str(pipe.dtype).removeprefix("torch."),
        "processes": state.num_processes,
    }  # fmt: skip
    return _score_and_report(args, usable, problems, run_settings, state)


def _score_and_report(args: argparse.Namespace, entries: list, problems: list, settings: dict, state) -> int:
    """Score ``entries`` (split across processes when launched so), then write the reports on the main process."""
    from pathlib import Path

    from faceclip.devices import resolve_device
    from faceclip.evaluation.clip_score import CLIPScorer
    from faceclip.evaluation.identity import IdentityScorer
    from faceclip.evaluation.parallel import distributed_map
    from faceclip.evaluation.report import REPORT_FILES, build_report, write_reports
    from faceclip.evaluation.score import ScoreResult, score_entries
    from faceclip.face import FaceAnalyzer

    main_process = state.is_main_process
    try:
        device = state.device if state.num_processes > 1 else resolve_device(args.device)
        identity = IdentityScorer(FaceAnalyzer(backend=args.face_backend))
        recognizer = identity.recognizer_name  # loads the recogniser now, so a missing model fails early
        clip = None if args.no_clip else CLIPScorer.from_pretrained(args.clip_model)
    except (OSError, ValueError, ImportError) as err:  # WeightsNotFoundError, FaceModelNotFoundError
        raise CommandError(f"cannot load the scoring models: {err}", EXIT_BAD_INPUT) from None
    if clip is not None:
        clip.model.to(device)

    def score_share(share: list) -> list[ScoreResult]:
        return [score_entries(share, identity, clip, batch_size=args.batch_size, progress=main_process)]

    result = ScoreResult(problems=list(problems))
    for part in distributed_map(score_share, entries, state):
        result.extend(part)
    if not main_process:
        return 0

    clip_name = clip.name if clip else None
    report = build_report(
        result.scores, result.problems, recognizer, clip_name, settings, relative_to=args.out
    )
    write_reports(report, args.out, contact_sheet=not args.no_contact_sheet)
    overall = report["aggregates"]["overall"]
    print(_summary_line(overall, len(result.problems)), file=sys.stderr)
    print(f"report: {Path(args.out) / REPORT_FILES['markdown']}", file=sys.stderr)
    if not result.scores:
        source = getattr(args, "manifest", None) or str(Path(args.out) / "manifest.jsonl")  # score | run
        print(f"faceclip eval: no image could be scored: every line was dropped: {_listed(result.problems, source)}.",
              file=sys.stderr)  # fmt: skip
        return 1
    return 1 if args.strict and result.problems else 0


def _summary_line(overall: dict, n_problems: int) -> str:
    parts = [f"scored {overall['n_images']} image(s)"]
    if overall["id_sim"]:
        parts.append(f"ID-Sim {overall['id_sim']['mean']:.4f}")
        parts.append(f"no-face rate {overall['no_face_rate']:.3f}")
    if overall["clip_t"]:
        parts.append(f"CLIP-T {overall['clip_t']['mean']:.2f}")
    if overall["clip_i"]:
        parts.append(f"CLIP-I {overall['clip_i']['mean']:.4f}")
    parts.append(f"{n_problems} problem(s)")
    return ", ".join(parts)


def _generate(args: argparse.Namespace, pipe, cells: list, settings, state) -> list:
    """Generate this process's share of ``cells``; gather every process's results."""
    from faceclip.evaluation.parallel import distributed_map
    from faceclip.evaluation.run import generate_cells

    def generate_share(share: list) -> list:
        return generate_cells(
            pipe, share, args.out, settings, model=str(args.model), overwrite=args.overwrite,
            progress=state.is_main_process,
        )  # fmt: skip

    return distributed_map(generate_share, cells, state)


def _process_state(args: argparse.Namespace):
    """Accelerate's process state (so `accelerate launch` splits the work; one process otherwise)."""
    from faceclip.evaluation.parallel import process_state

    return process_state(cpu=True if args.device == "cpu" else None)


def _check_positive(args: argparse.Namespace, name: str) -> None:
    if getattr(args, name) < 1:
        raise CommandError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
