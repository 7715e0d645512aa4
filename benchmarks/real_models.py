"""compute_interactions on full-size Hugging Face models, built from configs (no download).

    python benchmarks/real_models.py [--device cuda] [--dtype bfloat16 float32] [--samples 8] [--tiny]

Models (random weights; the cost of a forward does not depend on them):

- BERT-base (110M parameters, ``BertConfig()``) on 32-token sequences, tokens 1-10 as players
  (``TokenPlayers(n=10, words=False)``), masked to the ``[MASK]`` id;
- ViT-B/16 (86M parameters, ``ViTConfig()``) on 224 x 224 images,
  ``ImagePatchPlayers(grid=(2, 5))`` (n = 10), zero baseline.

Each sample costs 2**10 = 1,024 masked forwards. For each model and dtype:

- engine: ``ct.compute_interactions(model, inputs, players, kind="and", batch_size=rows)`` with
  default targets (one extra forward of the samples), all in;
- floor: one chunk of ``rows`` masked inputs built beforehand (untimed), then the model's
  forward over it under ``torch.inference_mode()``, as many times as the engine runs chunks:
  the forwards no engine can skip.

Best of ``--repeats`` rounds, engine and floor taking turns. ``--tiny`` shrinks both models to a
few layers of width 64 so the script can be checked on a CPU.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
from timing import race
from torch import nn

import concept_tracker as ct

N = 10
SEQ_LEN = 32
IMAGE = 224


def bert(tiny: bool) -> tuple[nn.Module, Callable[[int], dict], ct.Players]:
    from transformers import BertConfig, BertForSequenceClassification

    size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if tiny else {}
    model = BertForSequenceClassification(BertConfig(num_labels=2, **size))

    def inputs(samples: int) -> dict:
        ids = torch.randint(1000, 30000, (samples, SEQ_LEN), generator=torch.Generator().manual_seed(0))
        ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    players = ct.TokenPlayers(n=N, words=False, select=lambda units: list(range(1, N + 1)), mask_token_id=103)
    return model, inputs, players


def vit(tiny: bool) -> tuple[nn.Module, Callable[[int], torch.Tensor], ct.Players]:
    from transformers import ViTConfig, ViTForImageClassification

    size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if tiny else {}
    model = ViTForImageClassification(ViTConfig(num_labels=10, image_size=IMAGE, **size))

    def inputs(samples: int) -> torch.Tensor:
        return torch.randn(samples, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))

    return model, inputs, ct.ImagePatchPlayers(grid=(2, 5), baselines="zero")


def measure(name: str, build: Callable, args: argparse.Namespace, dtype: torch.dtype, device: torch.device) -> str:
    torch.manual_seed(0)
    model, make_inputs, players = build(args.tiny)
    model = model.to(device=device, dtype=dtype).eval()
    inputs = make_inputs(args.samples)
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.to(dtype)
    total = args.samples << N
    rows = min(args.rows, total)

    batch = ct.engine.to_device(inputs, device)
    players.prepare(batch)
    # A chunk spans whole samples (1,024 rows each) and part of the next, like the engine's.
    coalitions = ct.transforms.coalition_matrix(N, device)
    parts = [players.mask(s, coalitions) for s in ct.engine.split_samples(batch)[: math.ceil(rows / (1 << N))]]
    chunk = ct.engine.concat_inputs(parts)
    chunk = chunk[:rows] if isinstance(chunk, torch.Tensor) else {k: v[:rows] for k, v in chunk.items()}
    chunks = math.ceil(total / rows)

    def floor() -> None:
        with torch.inference_mode():
            for _ in range(chunks):
                model(**chunk) if isinstance(chunk, dict) else model(chunk)

    def engine() -> None:
        ct.compute_interactions(model, inputs, players, kind="and", batch_size=rows)

    best = race({"engine": engine, "floor": floor}, args.repeats, device)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (
        f"| {name}{' (tiny)' if args.tiny else ''}, {params:.1f}M parameters | {str(dtype).removeprefix('torch.')} | {args.samples} x 1,024 | {rows} | "
        f"{best['engine']:.3f} s | {best['floor']:.3f} s | {best['engine'] / best['floor']:.3f} | "
        f"{total / best['engine']:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32"])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--rows", type=int, default=2048, help="rows per chunk, engine and floor (default 2048)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="few-layer models of width 64, for a CPU check")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"Device: {name}, torch {torch.__version__}{', tiny models' if args.tiny else ''}")
    print("| model | dtype | rows | chunk | engine | floor | engine / floor | engine rows/s |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype_name in args.dtype:
        for label, build in (("BERT-base", bert), ("ViT-B/16", vit)):
            print(measure(label, build, args, getattr(torch, dtype_name), device), flush=True)


if __name__ == "__main__":
    main()
