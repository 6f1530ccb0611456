"""Samples/s of one stage-1 training step at full size (faceclip-sdxl, both branches, seeded random weights).

Frozen face ViTs and text towers run forward; the projections, fusers, heads and logit scale/bias train with
AdamW. Image targets are given as precomputed (random) vectors, as `faceclip prepare` stores them, so no CLIP
vision tower is loaded. Uses ~16 GB of RAM in fp32 on a CPU; run it under the team's lock there:

    flock /tmp/faceclip-bigmem.lock .venv/bin/python benchmarks/train_step.py --batch-size 2 --steps 2
    .venv/bin/python benchmarks/train_step.py --device cuda --batch-size 16 --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="no")
    parser.add_argument("--encoder", default="faceclip-sdxl")
    args = parser.parse_args()

    from faceclip.devices import resolve_device
    from faceclip.training.config import load_config
    from faceclip.training.data import collate
    from faceclip.training.loop import make_optimizer
    from faceclip.training.stage1 import Stage1Task
    from faceclip.training.synthetic import SyntheticFaceDataset

    device = resolve_device(args.device)
    config = load_config("stage1", None, [f"model.encoder={args.encoder}", "model.targets.image_l=precomputed",
                                          "model.targets.image_g=precomputed"])  # fmt: skip
    torch.manual_seed(0)
    task = Stage1Task(config).to(device)
    model = task.model.train()
    optimizer = make_optimizer(task.trainable_parameters(), config.optim)
    data = SyntheticFaceDataset(num_samples=args.batch_size, image_size=64, face_size=448)
    batch = collate([data[i] for i in range(args.batch_size)])
    for name in model.branches:
        dim = getattr(model.encoder, f"branch_{name}").config.text.projection_dim
        batch["targets"][f"image_{name}"] = torch.randn(args.batch_size, dim)
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
        "benchmark": "stage1_train_step", "encoder": args.encoder, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch_size": args.batch_size, "mixed_precision": args.mixed_precision, "seconds_per_step": seconds,
        "samples_per_second": args.batch_size / seconds, "loss": loss,
        "trainable_parameters": sum(p.numel() for p in task.trainable_parameters()),
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
