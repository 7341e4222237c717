"""`vlmforge score {vqa,caption,mcq}`: score official result files, JSON on stdout.

Scoring code is imported inside functions, and needs only the standard library until a
caption metric runs, so `vlmforge --help` stays light.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

_PER_ITEM = ("perQuestion", "perItem")


def score(args: argparse.Namespace) -> dict[str, Any]:
    """The scores of one `score` sub-command's files."""
    from components.evaluation import official_formats as f
    from components.evaluation import official_scoring as s

    if args.kind == "vqa":
        questions = f.load_vqa_questions(args.questions) if args.questions else None
        return s.score_vqa(f.load_vqa_results(args.results), f.load_vqa_annotations(args.annotations),
                           questions)
    if args.kind == "caption":
        return s.score_caption(f.load_caption_results(args.results),
                               f.load_caption_annotations(args.annotations), args.metrics)
    return s.score_files("mcq", args.results, items=args.items, items_format=args.format,
                         images=args.images, split=args.split, circular=args.circular)


def cmd_score(args: argparse.Namespace) -> int:
    """Print the scores as JSON; a format error or missing Java is one line on stderr, exit 2."""
    from components.evaluation.official_formats import FormatError
    from components.evaluation.official_scoring import MissingJavaError

    try:
        result = score(args)
    except (FormatError, MissingJavaError) as exc:
        print(f"vlmforge score {args.kind}: error: {exc}", file=sys.stderr)
        return 2
    if args.summary:
        result = {k: v for k, v in result.items() if k not in _PER_ITEM}
    print(json.dumps(result, indent=2))
    return 0


def add_score_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `score` with its `vqa`, `caption` and `mcq` sub-commands."""
    from components.evaluation.official_scoring import CAPTION_METRICS  # stdlib-only module

    parser = subparsers.add_parser(
        "score", help="score result files against official annotations (VQA, COCO captions, MCQ)")
    kinds = parser.add_subparsers(dest="kind", required=True)

    vqa = kinds.add_parser("vqa", help="official VQA accuracy (VQAv2, OK-VQA, TextVQA)")
    vqa.add_argument("--results", required=True, help='JSON [{"question_id", "answer"}]')
    vqa.add_argument("--annotations", required=True,
                     help="VQAv2/OK-VQA annotations JSON or TextVQA JSON")
    vqa.add_argument("--questions", help="VQAv2 questions JSON (checks ids, Multiple Choice)")

    caption = kinds.add_parser("caption", help="COCO caption metrics (BLEU, METEOR, ROUGE-L, CIDEr)")
    caption.add_argument("--results", required=True, help='JSON [{"image_id", "caption"}]')
    caption.add_argument("--annotations", required=True, help="COCO captions annotations JSON")
    caption.add_argument("--metrics", nargs="+", default=list(CAPTION_METRICS),
                         help="subset of %(default)s (METEOR needs Java)")

    mcq = kinds.add_parser("mcq", help="multiple-choice accuracy")
    mcq.add_argument("--results", required=True,
                     help='JSON or JSONL [{"id", "answer"}]; answers are letters or free text')
    mcq.add_argument("--items", required=True, help="items JSONL: question, options, answer, image "
                     "(or an MMBench TSV / ScienceQA problems.json with --format)")
    mcq.add_argument("--format", choices=["jsonl", "mmbench", "scienceqa"], default="jsonl",
                     help="layout of --items (default: %(default)s)")
    mcq.add_argument("--images", help="scienceqa: the folder holding <split>/<id>/image.png")
    mcq.add_argument("--split", default="test", help="scienceqa: the split scored (default: test)")
    mcq.add_argument("--circular", action="store_true",
                     help="mmbench: CircularEval (results hold every rotation, id + k * 1000000)")

    for sub in (vqa, caption, mcq):
        sub.add_argument("--summary", action="store_true", help="leave out the per-item scores")
        sub.set_defaults(func=cmd_score)
    return parser
