"""The saved FaceCLIP-SDXL layout (``save_pretrained``), read and written so that diffusers can load it too.

A saved folder holds ``vae/``, ``unet/``, ``scheduler/``, ``faceclip_encoder/`` and ``model_index.json``, plus two
one-line Python files through which ``diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``
finds our classes (diffusers only imports classes that live outside diffusers from files in the folder):

- ``faceclip_pipeline.py``, named by ``"_class_name": ["faceclip_pipeline", "FaceCLIPStableDiffusionXLPipeline"]``;
- ``faceclip_encoder/faceclip_encoder.py``, named by ``"faceclip_encoder": ["faceclip_encoder", "FaceCLIPEncoder"]``.

Both only import the installed ``faceclip`` package. ``FaceCLIPStableDiffusionXLPipeline.from_pretrained`` never
runs them: it reads the index through :func:`importable_index`, which names the installed classes directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from faceclip.hub import WeightsNotFoundError, is_hub_id, is_offline
from faceclip.outputs import write_text_atomic

PIPELINE_CLASS = "FaceCLIPStableDiffusionXLPipeline"
ENCODER_CLASS = "FaceCLIPEncoder"
PIPELINE_MODULE = "faceclip_pipeline"
ENCODER_MODULE = "faceclip_encoder"
COMPONENTS = ("vae", "unet", "scheduler", "faceclip_encoder")
INDEX = "model_index.json"

_PIPELINE_STUB = (
    '"""Lets diffusers.DiffusionPipeline.from_pretrained(..., trust_remote_code=True) find the FaceCLIP-SDXL '
    'pipeline (pip install faceclip)."""\n\n'
    "from faceclip.pipelines.sdxl.pipeline_faceclip_sdxl import FaceCLIPStableDiffusionXLPipeline\n\n"
    '__all__ = ["FaceCLIPStableDiffusionXLPipeline"]\n'
)
_ENCODER_STUB = (
    '"""Lets diffusers load the FaceCLIP encoder component of a FaceCLIP-SDXL pipeline (pip install faceclip)."""'
    "\n\nfrom faceclip.models.encoder import FaceCLIPEncoder\n\n"
    '__all__ = ["FaceCLIPEncoder"]\n'
)


def write_diffusers_entry_points(folder: str | os.PathLike) -> None:
    """Point ``folder/model_index.json`` at the two import files and write them (see the module docstring)."""
    folder = Path(folder)
    index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    index["_class_name"] = [PIPELINE_MODULE, PIPELINE_CLASS]
    index["faceclip_encoder"] = [ENCODER_MODULE, ENCODER_CLASS]
    write_text_atomic(folder / f"{PIPELINE_MODULE}.py", _PIPELINE_STUB)
    write_text_atomic(folder / "faceclip_encoder" / f"{ENCODER_MODULE}.py", _ENCODER_STUB)
    write_text_atomic(folder / INDEX, json.dumps(index, indent=2, sort_keys=True) + "\n")


def importable_index(config: dict) -> dict:
    """``config`` (a read ``model_index.json``) with our classes named by their installed modules, in place.

    Folders saved before the import files existed (``"_class_name": "FaceCLIPStableDiffusionXLPipeline"``,
    ``"faceclip_encoder": ["faceclip.models.encoder", "FaceCLIPEncoder"]``) come out the same.
    """
    if isinstance(config.get("_class_name"), list | tuple):
        config["_class_name"] = config["_class_name"][-1]
    entry = config.get("faceclip_encoder")
    if isinstance(entry, list | tuple) and entry[-1] == ENCODER_CLASS:
        config["faceclip_encoder"] = ["faceclip.models.encoder", ENCODER_CLASS]
    return config


def check_index(folder: Path) -> None:
    """Raise a clear error when ``folder`` is not a saved FaceCLIP-SDXL pipeline.

    Raises:
        faceclip.hub.WeightsNotFoundError: no ``model_index.json``, or a component folder it names is missing.
        ValueError: an index that is not UTF-8 JSON, not a JSON object, or lacks our components.
    """
    path = folder / INDEX
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{folder}: no {INDEX}; pass a folder written by FaceCLIPStableDiffusionXLPipeline.save_pretrained "
            "(or load the released weights with faceclip.load_pipeline('ByteDance/FaceCLIP'))."
        )
    fix = "save the pipeline again with FaceCLIPStableDiffusionXLPipeline.save_pretrained, or download it again."
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text, so not a pipeline index; {fix}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); {fix}") from None
    if not isinstance(index, dict):
        raise ValueError(
            f"{path}: holds a JSON {type(index).__name__}, not an object naming the pipeline's components; {fix}"
        )
    missing = [name for name in COMPONENTS if name not in index]
    if missing:
        raise ValueError(
            f"{path}: not a FaceCLIP-SDXL pipeline index (missing entries: {', '.join(missing)}); {fix}"
        )
    absent = [f"{name}/" for name in COMPONENTS if not (folder / name).is_dir()]
    if absent:
        raise WeightsNotFoundError(
            f"{folder}: {INDEX} names components whose folders are missing ({', '.join(absent)}); {fix}"
        )


def local_folder(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool | None = None,
    force_download: bool = False,
) -> Path:
    """``source`` as a local folder: itself, or the snapshot of the hub repo it names (downloaded if needed).

    Raises:
        faceclip.hub.WeightsNotFoundError: no such folder, or the repo cannot be downloaded (with how to fix it).
    """
    text = os.fspath(source)
    local = Path(text).expanduser()
    if local.is_dir():
        return local
    if not is_hub_id(text):
        raise WeightsNotFoundError(
            f"{text}: no such folder. Pass a folder written by save_pretrained or a hub repo id (owner/name)."
        )
    from huggingface_hub import snapshot_download

    offline = is_offline() if local_files_only is None else local_files_only
    try:
        snapshot = snapshot_download(
            text,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=offline,
            force_download=force_download,
        )
    except Exception as err:  # network, auth, not cached: all end as the same actionable error
        raise WeightsNotFoundError(
            f"Could not download the FaceCLIP-SDXL pipeline '{text}' ({type(err).__name__}: {err}); "
            f"model_index.json and the component folders are needed.\n"
            f"Download it while online (hf download {text}) or pass a local folder (--model PATH)."
        ) from err
    return Path(snapshot)
