"""The one place that turns a model argument into weights.

Every loader in the package (``load_pipeline``, both training stages, evaluation, the demo, the CLI) calls
:func:`resolve_model`, which reads a model argument as one of:

- a family's tiny name (``"tiny-random"``): tiny random components built from configs (offline, noise);
- a folder or hub repo in our layout: ``model_index.json`` as ``save_pretrained`` writes it; the pipeline class
  it names picks the family;
- a folder or hub repo in the released layout: the released checkpoint files (``model/face_clip_encoder.pt`` and
  ``model/unet.pt`` for FaceCLIP-SDXL, ``model/face_t5_encoder.pt`` and ``model/dit.pt`` for FaceT5-FLUX); the
  files present pick the family, and ``family`` picks one where a folder or repo holds both.

A hub id is told from a missing local path by its shape (``owner/name``). Adding a family is one entry in
:data:`FAMILIES`; no caller changes.

>>> from faceclip.registry import load_pipeline, resolve_model
>>> resolve_model("tiny-random").describe()
'FaceCLIP-SDXL, tiny random components (images are noise)'
>>> pipe = load_pipeline("tiny-random")
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from faceclip.hub import WeightsNotFoundError, is_hub_id
from faceclip.model_family import ModelFamily, ModelSource, SourceKind
from faceclip.pipelines.flux.registration import FACET5_FLUX
from faceclip.pipelines.sdxl.registration import FACECLIP_SDXL

logger = logging.getLogger(__name__)

FAMILIES: tuple[ModelFamily, ...] = (FACECLIP_SDXL, FACET5_FLUX)
"""The model families, the default first. Both released families live in one hub repo (``ByteDance/FaceCLIP``):
that repo resolves to the default family unless ``family`` names the other."""

DEFAULT_MODEL = FACECLIP_SDXL.released_repo
"""The model surfaces load when none is named: the released FaceCLIP-SDXL weights."""

PIPELINE_INDEX = "model_index.json"


class ModelArgumentError(ValueError):
    """A model argument names nothing loadable (a file, a folder in no known layout, an unknown family)."""


def get_family(name: str) -> ModelFamily:
    """The family called ``name`` (e.g. ``"faceclip-sdxl"``).

    Raises:
        ModelArgumentError: no family has that name.
    """
    for family in FAMILIES:
        if name == family.name:
            return family
    raise ModelArgumentError(
        f"unknown model family {name!r}; known families: {', '.join(f.name for f in FAMILIES)}."
    )


def family_of(pipe: object) -> ModelFamily:
    """The family of a loaded pipeline (matched by its class, or a class it derives from).

    Raises:
        ModelArgumentError: the pipeline is of no known family.
    """
    names = {cls.__name__ for cls in type(pipe).__mro__}
    for family in FAMILIES:
        if family.pipeline_class_name in names:
            return family
    raise ModelArgumentError(f"{type(pipe).__name__} is not the pipeline of any known model family.")


def list_models() -> list[str]:
    """The model names the registry knows without a path: each family's released repo and its tiny name."""
    return [name for family in FAMILIES for name in (family.released_repo, family.tiny_name)]


def resolve_model(
    model: str | os.PathLike, *, family: str | None = None, revision: str | None = None
) -> ModelSource:
    """Read a model argument (see the module docstring) as a typed :class:`ModelSource`.

    Only what is already on disk is read (a folder's ``model_index.json``); hub repos are not contacted here.
    A hub repo is taken to be in the released layout when it is a family's released repo, else in our layout.

    Args:
        model: a model name, a local folder, or a hub repo id.
        family: the family to use where the argument does not say (a hub repo holding several families' files).
        revision: hub revision (branch, tag or commit).

    Raises:
        ModelArgumentError: ``model`` is a file, a folder in no known layout, or ``family`` is unknown or
            contradicts what the folder holds.
    """
    wanted = get_family(family) if family is not None else None
    text = os.fspath(model)
    for candidate in FAMILIES:
        if text == candidate.tiny_name:
            return ModelSource(_check_family(candidate, wanted, text), SourceKind.TINY, text)
    local = Path(text).expanduser()
    if local.is_file():
        raise ModelArgumentError(
            f"--model {text}: this is a file; pass the folder that holds the model (written by save_pretrained, "
            "or holding the released model/*.pt files), a hub repo id, or one of: " + ", ".join(list_models())
        )
    if local.is_dir():
        return _resolve_folder(local, text, wanted)
    if not is_hub_id(text):
        raise WeightsNotFoundError(
            f"--model {text}: no such folder. Pass an existing folder, a hub repo id (owner/name), or one of: "
            + ", ".join(list_models())
        )
    for candidate in FAMILIES:
        if text.lower() == candidate.released_repo.lower() and wanted in (None, candidate):
            return ModelSource(candidate, SourceKind.RELEASED, text, revision)
    return ModelSource(wanted or FAMILIES[0], SourceKind.PRETRAINED, text, revision)


def _resolve_folder(folder: Path, text: str, wanted: ModelFamily | None) -> ModelSource:
    index = folder / PIPELINE_INDEX
    if index.is_file():
        return ModelSource(_check_family(_family_of_index(index), wanted, text), SourceKind.PRETRAINED, text)
    released = [f for f in FAMILIES if (folder / f.released_files[0]).is_file()]
    if wanted is not None and wanted in released:
        return ModelSource(wanted, SourceKind.RELEASED, text)
    if len(released) == 1:
        return ModelSource(_check_family(released[0], wanted, text), SourceKind.RELEASED, text)
    if len(released) > 1:
        raise ModelArgumentError(
            f"--model {text}: the folder holds the released files of several families "
            f"({', '.join(f.name for f in released)}); choose one with --family."
        )
    # Neither layout: read it as the released layout, whose loader lists every file that is missing.
    return ModelSource(wanted or FAMILIES[0], SourceKind.RELEASED, text)


def _family_of_index(index: Path) -> ModelFamily:
    fix = "pass a folder written by save_pretrained, or save the pipeline again"
    try:
        contents = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelArgumentError(f"{index}: not a readable pipeline index ({err}); {fix}.") from None
    if not isinstance(contents, dict):
        raise ModelArgumentError(
            f"{index}: holds a JSON {type(contents).__name__}, not a pipeline index (an object); {fix}."
        )
    class_name = contents.get("_class_name")
    if isinstance(class_name, list):  # ["module", "ClassName"]: a pipeline class that lives outside diffusers
        class_name = class_name[-1]
    for family in FAMILIES:
        if class_name == family.pipeline_class_name:
            return family
    known = ", ".join(f.pipeline_class_name for f in FAMILIES)
    raise ModelArgumentError(f"{index}: pipeline class {class_name!r} is none of ours ({known}).")


def _check_family(found: ModelFamily, wanted: ModelFamily | None, text: str) -> ModelFamily:
    if wanted is not None and wanted is not found:
        raise ModelArgumentError(f"--model {text} is a {found.title} model, not {wanted.title}.")
    return found


def load_pipeline(
    model: str | os.PathLike | ModelSource = DEFAULT_MODEL,
    *,
    family: str | None = None,
    torch_dtype=None,
    base_model: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
):
    """Load the pipeline a model argument names (on the CPU; move it with ``.to(device)``).

    Args:
        model: a model argument (see :func:`resolve_model`) or a resolved :class:`ModelSource`.
        family: the family, where ``model`` does not say.
        torch_dtype: weight dtype (e.g. ``torch.bfloat16``); ``None`` keeps the stored dtype.
        base_model: the base model's hub id or folder, for released weights (default: the family's, e.g. SDXL
            base for FaceCLIP-SDXL).
        cache_dir: where converted released weights are kept (default ``$FACECLIP_CACHE``, else
            ``$HF_HOME/faceclip``).
        revision: hub revision.

    Raises:
        faceclip.hub.WeightsNotFoundError: files are missing; the message lists them, where we looked, and how
            to get them.
        ModelArgumentError: the argument names nothing loadable.
    """
    source = (
        model if isinstance(model, ModelSource) else resolve_model(model, family=family, revision=revision)
    )
    logger.info("loading %s", source.describe())
    return source.family.load(source, torch_dtype=torch_dtype, base_model=base_model, cache_dir=cache_dir)


def load_encoder(
    model: str | os.PathLike | ModelSource, *, family: str | None = None, torch_dtype=None, seed: int = 0
):
    """The joint encoder alone (as training starts from it), from any model argument.

    Also accepts a folder saved by the encoder's own ``save_pretrained`` (``config.json``), a released encoder
    file (``face_clip_encoder.pt`` / ``.safetensors``) and, for the tiny model, a ``seed`` for its random weights.
    """
    if isinstance(model, ModelSource):
        source = model
    else:
        path = Path(os.fspath(model)).expanduser()
        fam = get_family(family) if family is not None else FAMILIES[0]
        if path.is_file() or (path.is_dir() and (path / "config.json").is_file()):
            kind = SourceKind.RELEASED if path.is_file() else SourceKind.PRETRAINED
            source = ModelSource(fam, kind, os.fspath(model))
        else:
            source = resolve_model(model, family=family)
    return source.family.load_encoder(source, torch_dtype=torch_dtype, seed=seed)
