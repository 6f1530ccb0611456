"""The FaceT5-FLUX family as the registry lists it: its constants and its loaders in one value.

The loaders are imported when first called: listing the family must not import diffusers' FLUX pipeline (and
the transformers image processors it drags in) in every command.
"""

from __future__ import annotations

from faceclip.model_family import ModelFamily
from faceclip.pipelines.flux.family import (
    DEFAULTS,
    FLUX_BASE,
    LICENSE_NOTICE,
    RELEASED_ENCODER_FILE,
    RELEASED_REPO,
    RELEASED_TRANSFORMER_FILE,
    TINY_RANDOM_FLUX,
)


def _load_pipeline(source, **options):
    from faceclip.pipelines.flux.loading import load_flux_pipeline

    return load_flux_pipeline(source, **options)


def _load_encoder(source, **options):
    from faceclip.pipelines.flux.loading import load_facet5_encoder

    return load_facet5_encoder(source, **options)


FACET5_FLUX = ModelFamily(
    name="facet5-flux",
    title="FaceT5-FLUX",
    pipeline_class_name="FaceT5FluxPipeline",
    tiny_name=TINY_RANDOM_FLUX,
    released_repo=RELEASED_REPO,
    released_files=(RELEASED_ENCODER_FILE, RELEASED_TRANSFORMER_FILE),
    base_model=FLUX_BASE,
    defaults=DEFAULTS,
    license_notice=LICENSE_NOTICE,
    load=_load_pipeline,
    load_encoder=_load_encoder,
)
