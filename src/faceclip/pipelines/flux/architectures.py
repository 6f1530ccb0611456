"""Architecture configs shipped with the package: FLUX.1-dev's sizes and the tiny test sizes.

The FLUX.1-dev files record the published ``black-forest-labs/FLUX.1-dev`` configs (transformer, VAE,
scheduler) so that the full-size architecture can be built without network access (benchmarks, key checks).
Loading real weights always reads the config that comes with them instead.
"""

from __future__ import annotations

import json
from importlib import resources

_NAMES = ("flux_transformer", "flux_vae", "flux_scheduler", "tiny_transformer", "tiny_vae")


def architecture_config(name: str) -> dict:
    """A packaged config as a dict (keys starting with ``_`` dropped, ``_class_name`` kept).

    Args:
        name: one of ``flux_transformer``, ``flux_vae``, ``flux_scheduler``, ``tiny_transformer``, ``tiny_vae``.
    """
    if name not in _NAMES:
        raise ValueError(
            f"architecture_config: unknown config name {name!r}; choose one of {', '.join(_NAMES)}."
        )
    text = resources.files("faceclip.pipelines.flux").joinpath("configs", f"{name}.json").read_text()
    return {k: v for k, v in json.loads(text).items() if k == "_class_name" or not k.startswith("_")}
