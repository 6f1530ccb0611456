"""The layout ``save_pretrained`` writes for our pipelines, read and written so that diffusers can load it too.

A saved folder holds the component folders and ``model_index.json``, plus two one-line Python files through
which ``diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` finds our classes (diffusers
only imports classes that live outside diffusers from files in the folder):

- ``faceclip_pipeline.py``, named by ``"_class_name": ["faceclip_pipeline", "<pipeline class>"]``;
- ``faceclip_encoder/faceclip_encoder.py``, named by ``"faceclip_encoder": ["faceclip_encoder", "<encoder class>"]``.

Both only import the installed ``faceclip`` package. Our own ``from_pretrained`` never runs them: it reads the
index through :meth:`SavedLayout.importable_index`, which names the installed classes directly. Each family
declares its :class:`SavedLayout` once, next to its pipeline.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from faceclip.hub import WeightsNotFoundError, is_hub_id, is_offline
from faceclip.outputs import write_text_atomic

INDEX = "model_index.json"
PIPELINE_MODULE = "faceclip_pipeline"
ENCODER_MODULE = "faceclip_encoder"


@dataclass(frozen=True)
class SavedLayout:
    """One family's saved layout.

    Attributes:
        title: the family's name for messages (``FaceCLIP-SDXL``).
        pipeline_class, pipeline_module: the pipeline class and the installed module defining it.
        encoder_class, encoder_module: the same for the ``faceclip_encoder`` component.
        components: the component folders every saved pipeline has.
    """

    title: str
    pipeline_class: str
    pipeline_module: str
    encoder_class: str
    encoder_module: str
    components: tuple[str, ...]

    def write_diffusers_entry_points(self, folder: str | os.PathLike) -> None:
        """Point ``folder/model_index.json`` at the two import files and write them (see the module docstring)."""
        folder = Path(folder)
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
        index["_class_name"] = [PIPELINE_MODULE, self.pipeline_class]
        index["faceclip_encoder"] = [ENCODER_MODULE, self.encoder_class]
        write_text_atomic(
            folder / f"{PIPELINE_MODULE}.py", self._stub(self.pipeline_module, self.pipeline_class)
        )
        write_text_atomic(
            folder / "faceclip_encoder" / f"{ENCODER_MODULE}.py",
            self._stub(self.encoder_module, self.encoder_class),
        )
        write_text_atomic(folder / INDEX, json.dumps(index, indent=2, sort_keys=True) + "\n")

    def _stub(self, module: str, name: str) -> str:
        return (
            f'"""Lets diffusers.DiffusionPipeline.from_pretrained(..., trust_remote_code=True) find {name} of '
            f'{self.title} (pip install faceclip)."""\n\nfrom {module} import {name}\n\n__all__ = ["{name}"]\n'
        )

    def importable_index(self, config: dict) -> dict:
        """``config`` (a read ``model_index.json``) with our classes named by their installed modules, in place.

        Folders saved before the import files existed (``"_class_name": "<pipeline class>"``,
        ``"faceclip_encoder": ["<module>", "<encoder class>"]``) come out the same.
        """
        if isinstance(config.get("_class_name"), list | tuple):
            config["_class_name"] = config["_class_name"][-1]
        entry = config.get("faceclip_encoder")
        if isinstance(entry, list | tuple) and entry[-1] == self.encoder_class:
            config["faceclip_encoder"] = [self.encoder_module, self.encoder_class]
        return config

    def check_index(self, folder: Path) -> None:
        """Raise a clear error when ``folder`` is not a saved pipeline of this family.

        Raises:
            faceclip.hub.WeightsNotFoundError: no ``model_index.json``, or a component folder it names is missing.
            ValueError: an index that is not UTF-8 JSON, not a JSON object, or lacks our components.
        """
        path = folder / INDEX
        if not path.is_file():
            raise WeightsNotFoundError(
                f"{folder}: no {INDEX}; pass a folder written by {self.pipeline_class}.save_pretrained (or load "
                "the released weights with faceclip.load_pipeline('ByteDance/FaceCLIP'))."
            )
        fix = f"save the pipeline again with {self.pipeline_class}.save_pretrained, or download it again."
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
        missing = [name for name in self.components if name not in index]
        if missing:
            raise ValueError(
                f"{path}: not a {self.title} pipeline index (missing entries: {', '.join(missing)}); {fix}"
            )
        absent = [f"{name}/" for name in self.components if not (folder / name).is_dir()]
        if absent:
            raise WeightsNotFoundError(
                f"{folder}: {INDEX} names components whose folders are missing ({', '.join(absent)}); {fix}"
            )

    def local_folder(
        self,
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
                text, revision=revision, cache_dir=cache_dir, token=token, local_files_only=offline,
                force_download=force_download,
            )  # fmt: skip
        except Exception as err:  # network, auth, not cached: all end as the same actionable error
            raise WeightsNotFoundError(
                f"Could not download the {self.title} pipeline '{text}' ({type(err).__name__}: {err}); "
                f"{INDEX} and the component folders are needed.\n"
                f"Download it while online (hf download {text}) or pass a local folder (--model PATH)."
            ) from err
        return Path(snapshot)


class SavedLayoutMixin:
    """``from_pretrained`` / ``load_config`` / ``save_pretrained`` for a diffusers pipeline with a ``saved_layout``
    class attribute (a :class:`SavedLayout`); mix in before ``DiffusionPipeline``."""

    saved_layout: SavedLayout

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load a pipeline saved by :meth:`save_pretrained`: a local folder or a hub repo in that layout.

        Takes every keyword of ``diffusers.DiffusionPipeline.from_pretrained`` (``torch_dtype`` / ``dtype``,
        ``variant``, ``use_safetensors``, ``low_cpu_mem_usage``, ``device_map``, ``local_files_only``,
        ``revision``, ``cache_dir``, ``token``, components to replace such as ``unet=...``). A hub repo is
        downloaded first (``HF_HUB_OFFLINE=1``: the local cache only). The released ``ByteDance/FaceCLIP`` files
        load through :func:`faceclip.load_pipeline` instead.

        Raises:
            faceclip.hub.WeightsNotFoundError: the folder, the repo or a weights file is missing (with what to do).
        """
        layout = cls.saved_layout
        hub = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "token", "force_download") if k in kwargs}
        folder = layout.local_folder(
            pretrained_model_name_or_path, local_files_only=kwargs.get("local_files_only"), **hub
        )
        layout.check_index(folder)
        if "torch_dtype" in kwargs and "dtype" not in kwargs:  # diffusers' newer name, without its warning
            kwargs["dtype"] = kwargs.pop("torch_dtype")
        try:
            return super().from_pretrained(folder, **kwargs)
        except OSError as err:
            if isinstance(err, WeightsNotFoundError):
                raise
            *first, last = (f"{name}/" for name in layout.components)
            folders = f"{', '.join(first)} and {last}"
            raise WeightsNotFoundError(
                f"Could not load the {layout.title} pipeline from {pretrained_model_name_or_path}: {err}\n"
                f"The folder must hold {folders} as save_pretrained writes them (with variant=... only where those "
                "files exist)."
            ) from err

    @classmethod
    def load_config(cls, *args, **kwargs):
        """diffusers' ``load_config``, with our classes named by their installed modules (see
        :meth:`SavedLayout.importable_index`), so loading never runs code from the folder."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        cls.saved_layout.importable_index(config)
        return loaded

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> None:
        """diffusers' ``save_pretrained`` (``variant``, ``safe_serialization``, ``max_shard_size``, ...), plus the
        two import files that let ``diffusers.DiffusionPipeline.from_pretrained`` load the folder (see
        :mod:`faceclip.pipelines.saved_layout`). With ``push_to_hub`` the finished folder is uploaded."""
        hub = {
            k: kwargs.pop(k)
            for k in ("commit_message", "private", "create_pr", "token", "repo_id")
            if k in kwargs
        }
        super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        self.saved_layout.write_diffusers_entry_points(save_directory)
        if push_to_hub:
            from huggingface_hub import create_repo, upload_folder

            repo_id = hub.get("repo_id") or os.path.basename(os.path.normpath(save_directory))
            repo_id = create_repo(
                repo_id, exist_ok=True, private=hub.get("private"), token=hub.get("token")
            ).repo_id
            upload_folder(
                repo_id=repo_id, folder_path=save_directory, token=hub.get("token"),
                commit_message=hub.get("commit_message") or f"Upload {self.saved_layout.title} pipeline",
                create_pr=hub.get("create_pr", False),
            )  # fmt: skip
