"""Architecture configs shipped with the package: the SDXL base sizes and the tiny test sizes.

The SDXL files record the published ``stabilityai/stable-diffusion-xl-base-1.0`` configs (UNet, VAE,
scheduler) so that the full-size architecture can be built without network access (benchmarks, key checks).
Loading real weights always reads the config that comes with them instead.
"""

from __future__ import annotations

import json
from importlib import resources

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
"""Hub repo of the SDXL base model that FaceCLIP-SDXL was fine-tuned from (VAE, scheduler, UNet config)."""

_NAMES = ("sdxl_unet", "sdxl_vae", "sdxl_scheduler", "tiny_unet", "tiny_vae")


def architecture_config(name: str) -> dict:
    """Return a packaged config as a dict.

    Args:
        name: one of ``sdxl_unet``, ``sdxl_vae``, ``sdxl_scheduler``, ``tiny_unet``, ``tiny_vae``.
    """
    if name not in _NAMES:
        raise ValueError(
            f"architecture_config: unknown config name {name!r}; choose one of {', '.join(_NAMES)}."
        )
    text = resources.files("faceclip.pipelines.sdxl").joinpath("configs", f"{name}.json").read_text()
    return json.loads(text)
