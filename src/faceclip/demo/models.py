"""The models the page offers: each loaded when first chosen, one on the device at a time.

Free of any web framework, like :mod:`faceclip.demo.handlers`; :mod:`faceclip.demo.app` shows the choice as a
"Model" menu when there is more than one.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faceclip.demo.handlers import DemoError, DemoPipeline

if TYPE_CHECKING:  # pragma: no cover
    from faceclip.model_family import ModelSource

logger = logging.getLogger(__name__)

ModelLoader = Callable[[str], DemoPipeline]
"""``load(name) -> pipeline``: loads the model ``name`` and puts it on its device. It may raise
:class:`~faceclip.demo.handlers.DemoError` with a message for the page."""


@dataclass(frozen=True)
class DemoModel:
    """One model the page offers.

    Attributes:
        name: the model argument (``"tiny-random-flux"``, a folder, a hub repo); recorded in each PNG's metadata.
        family_title: the family shown beside it, e.g. ``"FaceT5-FLUX"`` (``""`` when unknown).
        random_weights: its images are noise (a tiny model): the page says so while it is selected.
        license_notice: the licence of its weights, shown while it is selected (``""``: none to show).
    """

    name: str
    family_title: str = ""
    random_weights: bool = False
    license_notice: str = ""

    @property
    def label(self) -> str:
        """The name in the menu: ``"tiny-random-flux (FaceT5-FLUX)"``."""
        return f"{self.name} ({self.family_title})" if self.family_title else self.name

    @classmethod
    def from_source(cls, name: str, source: ModelSource) -> DemoModel:
        """The entry for a resolved model argument (:func:`faceclip.registry.resolve_model`): tiny models have
        random weights and no licence to show; the others show their family's licence notice."""
        from faceclip.model_family import SourceKind

        tiny = source.kind is SourceKind.TINY
        notice = "" if tiny else source.family.license_notice
        return cls(name, source.family.title, random_weights=tiny, license_notice=notice)


class ModelPool:
    """The page's models: the first loaded at start, the others when first chosen, one on the device at a time.

    Choosing another model frees the device before the new one is loaded, so two large models (FaceT5-FLUX
    has a 12B-parameter transformer) never share a GPU. The previous pipeline is moved to the CPU, not dropped
    at once: if the new one fails to load, the previous one goes back to its device and the page keeps
    working with it, without reading its weights again. Once the new one is loaded, the previous one is
    dropped, which frees its CPU memory too; with ``keep_unused_on_cpu`` it stays in CPU memory instead, so
    switching back only moves it (faster, at the cost of that memory).

    Every session shares the pool: a session that generates with another model than the one loaded switches
    back. Switches are serialised by a lock; the page runs them in the same one-at-a-time queue as generation,
    so no pipeline is moved while it generates.

    Args:
        models: the models offered, the default first (names must differ).
        load: loads one model by name onto its device (:data:`ModelLoader`).
        first: the first model's pipeline, already loaded (else ``load`` is called for it now).
        keep_unused_on_cpu: keep pipelines that are not in use in CPU memory.
    """

    def __init__(
        self,
        models: Sequence[DemoModel],
        load: ModelLoader,
        *,
        first: DemoPipeline | None = None,
        keep_unused_on_cpu: bool = False,
    ):
        if not models:
            raise ValueError("models: give at least one model.")
        names = [model.name for model in models]
        if len(set(names)) != len(names):
            raise ValueError(f"models: each name must appear once; got {names}.")
        self._models = {model.name: model for model in models}
        self._load = load
        self._keep_unused_on_cpu = keep_unused_on_cpu
        self._unused: dict[str, tuple[DemoPipeline, object]] = {}  # name -> (pipeline on the CPU, its device)
        self._lock = threading.Lock()
        self.current_name = names[0]
        self.current = first if first is not None else load(names[0])

    @classmethod
    def single(cls, pipe: DemoPipeline, model: DemoModel) -> ModelPool:
        """A pool of one loaded pipeline (the page then shows no menu)."""

        def no_other(name: str) -> DemoPipeline:
            raise DemoError(f"This demo offers only {model.label}.")

        return cls([model], no_other, first=pipe)

    @property
    def models(self) -> tuple[DemoModel, ...]:
        """The models offered, the default first."""
        return tuple(self._models.values())

    def model(self, name: str) -> DemoModel:
        """The entry called ``name``.

        Raises:
            DemoError: the demo offers no such model.
        """
        if name not in self._models:
            raise DemoError(f"Unknown model {name!r}; choose one of: {', '.join(self._models)}.")
        return self._models[name]

    def select(self, name: str) -> DemoPipeline:
        """The pipeline of ``name`` on its device, loading it (and freeing the device) if another is loaded.

        Raises:
            DemoError: ``name`` is unknown or failed to load; the previous model is still loaded and in use.
        """
        model = self.model(name)
        with self._lock:
            if name == self.current_name:
                return self.current
            previous, device = self.current, getattr(self.current, "device", None)
            _to_device(previous, "cpu")
            try:
                pipe = self._bring_back(name) or self._load(name)
            except Exception as error:
                _to_device(previous, device)
                raise DemoError(self._load_failure(model, error)) from None
            if self._keep_unused_on_cpu:
                self._unused[self.current_name] = (previous, device)
            self.current_name, self.current = name, pipe
            del previous
            _release_memory()
            logger.info("switched to %s", model.label)
            return pipe

    def _bring_back(self, name: str) -> DemoPipeline | None:
        """A pipeline kept in CPU memory (``keep_unused_on_cpu``), moved back to its device; else ``None``."""
        if name not in self._unused:
            return None
        pipe, device = self._unused.pop(name)
        return _to_device(pipe, device)

    def _load_failure(self, model: DemoModel, error: Exception) -> str:
        """The page's message for a failed load: the reason where it is one for people, else the server log."""
        still = f"The page still uses {self.model(self.current_name).label}."
        if isinstance(error, DemoError | ValueError | OSError):  # e.g. missing weights, a folder in no layout
            logger.warning("cannot load %s: %s", model.label, error)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return f"Cannot load {model.label}: {reason} {still}"
        logger.error("cannot load %s", model.label, exc_info=error)
        if "out of memory" in str(error).lower():
            return f"Cannot load {model.label}: the device ran out of memory. {still}"
        return f"Cannot load {model.label}; the details are in the server log. {still}"


def _to_device(pipe: DemoPipeline, device: object) -> DemoPipeline:
    """``pipe.to(device)`` where the pipeline can move (stand-ins may not); returns ``pipe``."""
    if device is not None and hasattr(pipe, "to"):
        pipe.to(device)
    return pipe


def _release_memory() -> None:
    """Hand memory of dropped pipelines back: collect them, then empty the accelerator's cache."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()
