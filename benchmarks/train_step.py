"""Samples/s and peak memory of one training step.

``--stage stage1`` (default): stage 1 at full size (faceclip-sdxl, both branches, seeded random weights).
``--stage facet5-stage1`` / ``flux-stage2``: the FaceT5-FLUX stages on their tiny configs (CPU, seconds), or on
``--config FILE`` (e.g. ``stage2_flux.yaml`` on a GPU with the released weights).

Frozen face ViTs and text towers run forward; the projections, fusers, heads and logit scale/bias train with
AdamW. Image targets are given as precomputed (random) vectors, as `faceclip prepare` stores them, so no CLIP
vision tower is loaded. Uses ~16 GB of RAM in fp32 on a CPU; run it under the team's lock there:

    flock /tmp/faceclip-bigmem.lock .venv/bin/python benchmarks/train_step.py --batch-size 2 --steps 2
    .venv/bin/python benchmarks/train_step.py --device cuda --batch-size 16 --mixed-precision bf16
    .venv/bin/python benchmarks/train_step.py --stage flux-stage2 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

CONFIGS = Path(__file__).parents[1] / "src" / "faceclip" / "training" / "configs"
#: --stage -> (stage, tiny config) of the FaceT5-FLUX family.
FLUX_STAGES = {
    "facet5-stage1": ("stage1", "stage1_facet5_tiny.yaml"),
    "flux-stage2": ("stage2", "stage2_flux_tiny.yaml"),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="no")
    parser.add_argument("--encoder", default="faceclip-sdxl", help="stage1 only")
    parser.add_argument("--stage", choices=["stage1", *FLUX_STAGES], default="stage1")
    parser.add_argument("--config", help="FaceT5-FLUX stages: a config file instead of the tiny one")
    args = parser.parse_args()

    from faceclip.devices import resolve_device
    from faceclip.training.loop import make_optimizer

    device = resolve_device(args.device)
    torch.manual_seed(0)
    task, batch, config = _flux_setup(args) if args.stage in FLUX_STAGES else _sdxl_stage1_setup(args)
    task.to(device)
    model = task.model.train()
    optimizer = make_optimizer(task.trainable_parameters(), config.optim)
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    batch["targets"] = {k: v.to(device) for k, v in batch["targets"].items()}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.mixed_precision == "bf16")

    def step() -> float:
        with autocast:
            loss = model(batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # .item() waits for the device

    step()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    seconds = (time.perf_counter() - start) / args.steps
    result = {
        "benchmark": f"{args.stage}_train_step", "config": args.config or FLUX_STAGES.get(args.stage, ("", None))[1],
        "encoder": args.encoder if args.stage == "stage1" else None, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch_size": args.batch_size, "mixed_precision": args.mixed_precision, "seconds_per_step": seconds,
        "samples_per_second": args.batch_size / seconds, "loss": loss,
        "trainable_parameters": sum(p.numel() for p in task.trainable_parameters()),
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # Linux: KiB
    }  # fmt: skip
    print(json.dumps(result))


def _sdxl_stage1_setup(args):
    """The full-size SDXL stage-1 task and a synthetic batch with precomputed (random) image targets."""
    from faceclip.training.config import load_config
    from faceclip.training.data import collate
    from faceclip.training.stage1 import Stage1Task
    from faceclip.training.synthetic import SyntheticFaceDataset

    config = load_config("stage1", None, [f"model.encoder={args.encoder}", "model.targets.image_l=precomputed",
                                          "model.targets.image_g=precomputed"])  # fmt: skip
    task = Stage1Task(config)
    data = SyntheticFaceDataset(num_samples=args.batch_size, image_size=64, face_size=448)
    batch = collate([data[i] for i in range(args.batch_size)])
    for name in task.model.branches:
        dim = getattr(task.model.encoder, f"branch_{name}").config.text.projection_dim
        batch["targets"][f"image_{name}"] = torch.randn(args.batch_size, dim)
    return task, batch, config


def _flux_setup(args):
    """A FaceT5-FLUX stage's task (as `faceclip train` builds it) and one batch of its config's data."""
    import importlib

    from faceclip.cli.train import TASKS
    from faceclip.training.config import load_config
    from faceclip.training.data import eval_batch

    stage, tiny = FLUX_STAGES[args.stage]
    config = load_config(stage, args.config or CONFIGS / tiny, [f"data.batch_size={args.batch_size}"])
    module, name = TASKS[type(config).__name__]
    task = getattr(importlib.import_module(module), name)(config)
    dims = task.synthetic_target_dims() if config.data.source == "synthetic" else None
    batch = eval_batch(config.data, args.batch_size, dims)
    batch["position"] = torch.arange(args.batch_size)
    return task, batch, config


if __name__ == "__main__":
    main()
