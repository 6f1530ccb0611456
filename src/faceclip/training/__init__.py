"""Training FaceCLIP: data preparation, stage-1 alignment of the joint encoder, stage-2 SDXL fine-tuning.

>>> from faceclip.training import load_config, Stage1Task, fit
>>> config = load_config("stage1", "src/faceclip/training/configs/stage1_tiny.yaml", ["run.max_steps=10"])
>>> metrics = fit(Stage1Task(config), config)

A stage is a :class:`TrainingTask` (``faceclip.training.task``); :func:`fit` trains any of them. Needs the
``train`` extra (webdataset, pyyaml, tensorboard, peft; accelerate is a core dependency); modules are imported
lazily.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "load_config": "faceclip.training.config",
    "Stage1Config": "faceclip.training.config",
    "Stage2Config": "faceclip.training.config",
    "Stage1Task": "faceclip.training.stage1",
    "Stage2Task": "faceclip.training.stage2",
    "fit": "faceclip.training.loop",
    "TrainingTask": "faceclip.training.task",
    "StepOutput": "faceclip.training.task",
    "alignment_loss": "faceclip.training.losses",
    "sigmoid_loss": "faceclip.training.losses",
    "softmax_loss": "faceclip.training.losses",
    "AlignmentHeads": "faceclip.training.heads",
    "init_text_towers_from_sdxl": "faceclip.training.text_init",
    "prepare_shards": "faceclip.training.prepare",
    "SyntheticFaceDataset": "faceclip.training.synthetic",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'faceclip.training' has no attribute {name!r}")
