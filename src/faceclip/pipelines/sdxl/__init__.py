"""FaceCLIP-SDXL: the pipeline on diffusers' SDXL, its loaders (our layout, the released files) and tiny parts."""

from faceclip.pipelines.sdxl.pipeline_faceclip_sdxl import (
    FaceCLIPStableDiffusionXLPipeline,
    FaceCLIPStableDiffusionXLPipelineOutput,
)

__all__ = ["FaceCLIPStableDiffusionXLPipeline", "FaceCLIPStableDiffusionXLPipelineOutput"]
