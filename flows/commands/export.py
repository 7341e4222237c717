"""`vlmforge export LAYOUT --source S --count N --out DIR`: generated samples in a public layout
(VQAv2 or COCO captions), to try the bring-your-own-data path with files the project never
trained on. JSON summary on stdout."""

from __future__ import annotations

import argparse
import json


def cmd_export(args: argparse.Namespace) -> int:
    from components.data.export import EXPORTERS

    summary = EXPORTERS[args.layout](args.source, args.count, args.out, seed=args.seed,
                                     split=args.split, image_size=args.image_size,
                                     subset=args.subset)
    print(json.dumps(summary, indent=1))
    return 0


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="generated samples in a public layout (VQAv2, COCO "
                                             "captions), e.g. to try data.datasets")
    p.add_argument("layout", choices=["vqav2", "coco-captions"])
    p.add_argument("--source", required=True,
                   help="generator: scenes_vqa (vqav2) or scenes_caption (coco-captions)")
    p.add_argument("--count", type=int, required=True, help="images")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1, help="data seed (the tiny recipe trains on 0)")
    p.add_argument("--split", default="train", help="the generator's split drawn from")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--subset", default="train2014", help="COCO subset in the file names")
    p.set_defaults(func=cmd_export)
    return p
