"""FaceT5-FLUX: the pipeline on diffusers' FLUX, its loaders (our layout, the released files) and tiny parts."""

from faceclip.pipelines.flux.pipeline_facet5_flux import FaceT5FluxPipeline, FaceT5FluxPipelineOutput

__all__ = ["FaceT5FluxPipeline", "FaceT5FluxPipelineOutput"]
