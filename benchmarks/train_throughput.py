"""Long-CLIP training throughput and peak memory through the real trainer (ContrastiveTrainer + Long-CLIP loss).

    python benchmarks/train_throughput.py                       # on a CUDA GPU: B/16 and L/14-336 sized, bf16
    python benchmarks/train_throughput.py --sizes tiny --steps 3 # anywhere: checks the script itself

Random-weight models of the real shapes, synthetic images and captions (long captions of ~200 tokens, short of ~20,
padded per batch like the collator does), batch 128 per device. For each size and attention implementation it times
optimizer steps after warm-up and reports samples/s and peak GPU memory. Prints a Markdown table; record results in
docs/benchmarks.md with the date and the device.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass

import torch
from peers import CLIP_SHAPES, clip_ids  # benchmarks/ is on sys.path when this runs as a script
from torch.utils.data import Dataset
from transformers import TrainerCallback, TrainingArguments

from modeling_longclip import LongCLIPConfig, LongCLIPModel
from modeling_longclip.training.trainer import ContrastiveTrainer


class SyntheticPairs(Dataset):
    """Random pixels and token ids shaped like real Long-CLIP batches (already tokenized: no decoding cost)."""

    def __init__(self, image_size: int, length: int = 100_000, long_tokens: int = 200, short_tokens: int = 20):
        self.image_size, self.length, self.long_tokens, self.short_tokens = (
            image_size,
            length,
            long_tokens,
            short_tokens,
        )

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return {"pixel_values": torch.randn(3, self.image_size, self.image_size, generator=generator), "seed": index}


@dataclass
class SyntheticCollator:
    long_tokens: int
    short_tokens: int

    def __call__(self, rows):
        batch, generator = len(rows), torch.Generator().manual_seed(rows[0]["seed"])
        return {
            "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
            "input_ids": clip_ids([self.long_tokens] * batch, self.long_tokens, generator),
            "short_input_ids": clip_ids([self.short_tokens] * batch, self.short_tokens, generator),
        }


class StepTimer(TrainerCallback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.timed = warmup, None, 0

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        elif state.global_step > self.warmup:
            self.timed += 1


def run(size: str, attn: str, steps: int, warmup: int, batch: int, bf16: bool, gradient_checkpointing: bool) -> dict:
    spec = CLIP_SHAPES[size]
    config = LongCLIPConfig(
        text_config=spec["text"], vision_config=spec["vision"], projection_dim=spec["projection_dim"]
    )
    model = LongCLIPModel(config)
    model.set_attn_implementation(attn)
    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir="/tmp/longclip-throughput",
        max_steps=warmup + steps,
        per_device_train_batch_size=batch,
        learning_rate=1e-6,
        bf16=bf16 and cuda,
        gradient_checkpointing=gradient_checkpointing,
        save_strategy="no",
        report_to="none",
        logging_steps=10_000,
        disable_tqdm=True,
        dataloader_num_workers=4 if cuda else 0,
        remove_unused_columns=False,
        use_cpu=not cuda,
    )
    timer = StepTimer(warmup)
    trainer = ContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=SyntheticPairs(spec["vision"]["image_size"]),
        data_collator=SyntheticCollator(200, 20),
        callbacks=[timer],
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - timer.start
    return {
        "size": size,
        "attn": attn,
        "batch": batch,
        "gc": gradient_checkpointing,
        "samples_per_s": timer.timed * batch / seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["B/16", "L/14-336"], choices=sorted(CLIP_SHAPES))
    parser.add_argument("--attn", nargs="+", default=["sdpa", "eager"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    rows = []
    for size in args.sizes:
        for attn in args.attn:
            batch = args.batch if size != "tiny" else min(args.batch, 16)
            rows.append(run(size, attn, args.steps, args.warmup, batch, not args.no_bf16, args.gradient_checkpointing))
    bf16 = not args.no_bf16 and torch.cuda.is_available()
    print(f"\nLong-CLIP training throughput on {device}, torch {torch.__version__}, bf16={bf16}")
    print("| size | attention | batch/device | grad. checkpointing | samples/s | peak memory (GiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['attn']} | {r['batch']} | {r['gc']} | {r['samples_per_s']:.1f} | {r['peak_gib']:.1f} |"
        )


if __name__ == "__main__":
    main()
