"""The data report of one preparation run: counts per task and split, the quarantine table,
image sizes and aspect ratios, image tokens and sample lengths per training stage, the
modality mix and text-rich share per source, near-duplicates within the training split and
the training images that duplicate an evaluation suite's, rendered as markdown + PNG plots
(flows/ logs them).

Everything is read from what the data stages wrote under ``data/``: the manifests and shards
of ``data/shards``, ``validation.json``, any ``quarantine.jsonl`` ledgers (read generically:
counted per file and rule), ``contamination.json`` and the tokenizer, so new sources, tasks
and rules need no change here. Token counts need the recipe's model and stages
(``TokenModel``, built by flows/ from the recipe).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from components.data.shards import read_samples

GRID_CELL = 96
LABEL_WIDTH = 120
TEXT_RICH_TASKS = ("ocr", "document", "chart", "table")  # tasks whose images are mostly text
MODALITIES = ("image", "text-only", "multi-image")
PLOTS = {"sizes": "image_sizes.png", "tokens": "tokens.png", "modality": "modality.png",
         "duplicates": "duplicates.png"}
IMAGE_MEMBER = re.compile(r"^(?P<key>[^.]+)\.(?P<ext>\d{3}\.\w+|json)$")
DUPLICATE_EXAMPLES = 8


@dataclass(frozen=True)
class StageView:
    """What the token count of one training stage depends on."""

    name: str
    kind: str
    longest_edge: int
    sources: tuple[str, ...]
    split_turns: bool = False
    question_types: tuple[str, ...] | None = None  # with split_turns: the turns trained on


@dataclass(frozen=True)
class TokenModel:
    """How the recipe's processor turns a sample into tokens: the architecture and its image
    options, the vision tower's input (``tile``) and patch size (None: unknown, a hub tower
    not on disk), ``max_length`` and the training stages."""

    architecture: str
    tile: int | None
    patch: int | None
    scale_factor: int
    latents: int
    max_length: int
    stages: tuple[StageView, ...]
    # idefics3: (tokenizer, longest_edge) -> the recipe's processor at that resolution (given
    # by flows/, which builds models; without it the image tokens are estimated)
    processor: Callable[[Any, int], Any] | None = None


@dataclass
class StageTokens:
    """Token counts of one stage's training samples at its resolution."""

    stage: StageView
    image_tokens: list[int]  # per sample (all its images)
    total_tokens: list[int]  # per sample (the longest row it makes)
    skipped: int  # samples no row of which fits max_length

    @property
    def samples(self) -> int:
        return len(self.total_tokens)


@dataclass
class DataReport:
    """What one preparation run produced and rejected."""

    tasks: dict[str, dict[str, int]]  # split -> task -> samples
    sources: dict[str, dict[str, int]]  # split -> source -> samples
    quarantine: list[tuple[str, str, int]]  # (where, rule, records)
    validation: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> summary
    modality: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> modality -> n
    text_rich: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (rich, images)
    image_sizes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # split -> (w, h)
    contamination: dict[str, Any] = field(default_factory=dict)  # data/contamination.json
    tokens: list[StageTokens] = field(default_factory=list)
    token_method: str = ""
    max_length: int = 0  # the recipe's model.max_length (with tokens)

    @property
    def total(self) -> int:
        return sum(n for per in self.tasks.values() for n in per.values())


# ---- reading what the stages wrote ---------------------------------------------------------

def _manifest_rows(manifests: Path) -> dict[str, list[dict[str, Any]]]:
    return {path.stem: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                        if line]
            for path in sorted(manifests.glob("*.jsonl"))}


def _counts(rows: dict[str, list[dict[str, Any]]], column: str) -> dict[str, dict[str, int]]:
    return {split: dict(Counter(row[column] for row in per)) for split, per in rows.items()}


def _quarantine_rows(data_dir: Path) -> list[tuple[str, str, int]]:
    rows = []
    for ledger in sorted(data_dir.rglob("quarantine.jsonl")):
        where = str(ledger.parent.relative_to(data_dir))
        rules = Counter(json.loads(line).get("rule", "?")
                        for line in ledger.read_text(encoding="utf-8").splitlines() if line.strip())
        rows += [(where, rule, n) for rule, n in sorted(rules.items())]
    return rows


def _validation(path: Path) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str, int]]]:
    """Per-split summary of validation.json, and its failed expectations as quarantine-like rows."""
    if not path.exists():
        return {}, []
    summary, failed = {}, []
    for split, rep in json.loads(path.read_text()).items():
        if not isinstance(rep, dict):
            continue
        summary[split] = {k: rep[k] for k in ("n_rows", "success") if k in rep}
        for f in rep.get("failures") or []:
            columns = ",".join(f.get("columns") or [])
            failed.append((f"validation/{split}", f"{f.get('expectation')}({columns})",
                           int(f.get("unexpected_count") or 0)))
    return summary, failed


def modality(n_images: int) -> str:
    return MODALITIES[0] if n_images == 1 else MODALITIES[1] if n_images == 0 else MODALITIES[2]


def _modality_mix(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    """Samples per source (all splits) that hold one image, none, or several."""
    out: dict[str, Counter] = {}
    for per in rows.values():
        for row in per:
            out.setdefault(row["source"], Counter())[modality(row["n_images"])] += 1
    return {source: {m: counts.get(m, 0) for m in MODALITIES} for source, counts in out.items()}


def _text_rich(rows: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[int, int]]:
    """Per split: images of text-rich tasks (``TEXT_RICH_TASKS``), and all images."""
    return {split: (sum(r["n_images"] for r in per if r["task"] in TEXT_RICH_TASKS),
                    sum(r["n_images"] for r in per)) for split, per in rows.items()}


def scan_shards(paths: list[Path]) -> Iterator[tuple[str, dict[str, Any], list[tuple[int, int]]]]:
    """(key, record, image sizes) of every sample, reading only the image headers."""
    for path in paths:
        with tarfile.open(path) as tar:
            key, record, sizes = None, None, []
            for member in tar:
                found = IMAGE_MEMBER.match(member.name)
                if not found:
                    continue
                if found["key"] != key:
                    if key is not None:
                        yield key, record or {}, sizes
                    key, record, sizes = found["key"], None, []
                data = tar.extractfile(member).read()
                if found["ext"] == "json":
                    record = json.loads(data)
                else:
                    sizes.append(Image.open(io.BytesIO(data)).size)
            if key is not None:
                yield key, record or {}, sizes


def _image_sizes(shards: Path, splits: list[str]) -> dict[str, list[tuple[int, int]]]:
    return {split: [size for _, _, sizes in scan_shards(sorted((shards / split).glob("*.tar")))
                    for size in sizes] for split in splits}


def build_report(data_dir: str | Path, tokens: TokenModel | None = None) -> DataReport:
    """Read the report's numbers from a data folder (``data/`` of a DVC workspace); with
    ``tokens``, also the token counts of every training stage (needs ``data/tokenizer``)."""
    data_dir = Path(data_dir)
    rows = _manifest_rows(data_dir / "shards" / "manifests")
    validation, failed = _validation(data_dir / "validation.json")
    contamination = data_dir / "contamination.json"
    report = DataReport(_counts(rows, "task"), _counts(rows, "source"),
                        _quarantine_rows(data_dir) + failed, validation,
                        _modality_mix(rows), _text_rich(rows),
                        _image_sizes(data_dir / "shards", list(rows)),
                        json.loads(contamination.read_text()) if contamination.exists() else {})
    if tokens is not None and (data_dir / "tokenizer").exists():
        report.tokens, report.token_method = stage_tokens(data_dir / "shards", data_dir / "tokenizer",
                                                          tokens)
        report.max_length = tokens.max_length
    return report


# ---- tokens per sample ---------------------------------------------------------------------

class ImageTokens:
    """Image tokens of one image of size (w, h) at a stage's resolution, per architecture.

    idefics3: the recipe's own processor (`build_processor` with the data's tokenizer, the
    tower's tile and patch size and the scale factor) encodes the image placeholder alone
    with a blank image of that size: the tiles, row markers, line breaks and global view it
    writes, as training encodes them (its private `_get_num_multimodal_tokens` changed what
    it counts between transformers releases). Other architectures: an estimate from the model section: idefics2 `latents`
    per view (the image, plus 4 crops above the tile size) and 2 markers each; llava
    (tile / patch)^2 patches; idefics 1 marker (its image enters by cross-attention)."""

    def __init__(self, model: TokenModel, tokenizer: Any):
        self.model, self.tokenizer = model, tokenizer
        self._processors: dict[int, Any] = {}
        self._cache: dict[tuple[int, int, int], int] = {}

    @property
    def method(self) -> str:
        if self.model.architecture == "idefics3":
            return ("image tokens from the recipe's Idefics3 processor (the data tokenizer, "
                    f"{self.model.tile} px tiles, {self.model.patch} px patches, scale factor "
                    f"{self.model.scale_factor}); text tokens from the data tokenizer's chat template")
        return (f"image tokens estimated from the model section ({self.model.architecture}); "
                "text tokens from the data tokenizer's chat template")

    def __call__(self, size: tuple[int, int], longest_edge: int) -> int:
        key = (*size, longest_edge)
        if key not in self._cache:
            self._cache[key] = self._count(size, longest_edge)
        return self._cache[key]

    def _count(self, size: tuple[int, int], longest_edge: int) -> int:
        m = self.model
        if m.architecture == "idefics3" and m.processor is not None:
            processor = self._processors.get(longest_edge)
            if processor is None:
                processor = self._processors[longest_edge] = m.processor(self.tokenizer, longest_edge)
            blank = Image.new("RGB", size)
            encoded = processor(text=[processor.image_token], images=[[blank]],
                                add_special_tokens=False)
            return len(encoded["input_ids"][0])
        if m.architecture == "idefics3":  # pixel shuffle: (tile / patch / scale)^2 per view
            views = 1 if longest_edge <= m.tile else (longest_edge // m.tile) ** 2 + 1
            return views * (m.tile // m.patch // m.scale_factor) ** 2
        if m.architecture == "idefics2":
            return (5 if longest_edge > m.tile else 1) * (m.latents + 2)
        if m.architecture == "llava":
            return (m.tile // m.patch) ** 2
        return 1


def _turns(record: dict[str, Any], split_turns: bool) -> list[list[dict[str, Any]]]:
    """The conversations a supervised sample trains as: whole, or one per user turn (each
    with all the images), as the training batches build them."""
    messages = record.get("messages") or []
    if not split_turns:
        return [messages]
    images = [p for m in messages if m["role"] == "user" and isinstance(m["content"], list)
              for p in m["content"] if p.get("type") == "image"]
    out = []
    for i, m in enumerate(messages):
        if m["role"] == "user" and i + 1 < len(messages) and messages[i + 1]["role"] == "assistant":
            text = [p for p in m["content"] if p.get("type") != "image"] \
                if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            out.append([{"role": "user", "content": images + text}, messages[i + 1]])
    return out or [messages]


def _rows(record: dict[str, Any], mode: str) -> list[list[dict[str, Any]]]:
    """The conversations one sample trains as: ``whole``, ``split`` (one per user turn) or
    ``align`` (the prompt with each answer)."""
    if mode == "align":
        return [[*record["messages"], {"role": "assistant", "content": [{"type": "text", "text": record[k]}]}]
                for k in ("chosen", "rejected") if k in record] or [record["messages"]]
    return _turns(record, split_turns=mode == "split")


def _text_counts(tokenizer: Any, records: list[dict[str, Any]], mode: str) -> list[list[int]]:
    """Tokens of each chat-templated row of each record (an `<image>` placeholder is one
    token), tokenised in one batch."""
    rows = [_rows(r, mode) for r in records]
    texts = [tokenizer.apply_chat_template(conv, tokenize=False) for per in rows for conv in per]
    lengths = iter(len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids) \
        if texts else iter(())
    return [[next(lengths) for _ in per] for per in rows]


def _selected(record: dict[str, Any], rows: list[int], stage: StageView) -> list[int]:
    """The rows a stage trains on: with ``question_types``, the turns of those types (the
    record's ``qtypes``, or ``qtype`` for one turn), as the training batches select them."""
    if stage.question_types is None or not stage.split_turns:
        return rows
    qtypes = record.get("qtypes", [record["qtype"]] if "qtype" in record else [])
    if len(qtypes) != len(rows):
        return []
    return [n for n, q in zip(rows, qtypes, strict=True) if q in stage.question_types]


def _mode(stage: StageView) -> str:
    return "align" if stage.kind == "align" else "split" if stage.split_turns else "whole"


def stage_tokens(shards: Path, tokenizer_dir: Path, model: TokenModel
                 ) -> tuple[list[StageTokens], str]:
    """Image and total tokens of every training stage's train samples at its resolution, and
    how many of them no row fits ``max_length`` (the training batches skip those)."""
    from transformers import AutoTokenizer

    if model.architecture == "idefics3" and (model.tile is None or model.patch is None) \
            or model.architecture in ("idefics2", "llava") and model.tile is None:
        return [], (f"No token counts: the {model.architecture} vision tower's size is not in the "
                    "recipe (a hub tower not on disk).")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    images = ImageTokens(model, tokenizer)
    samples = [(record, sizes) for _, record, sizes in
               scan_shards(sorted((shards / "train").glob("*.tar")))]
    texts: dict[str, list[list[int]]] = {}
    out = []
    for stage in model.stages:
        mode = _mode(stage)
        if mode not in texts:
            texts[mode] = _text_counts(tokenizer, [r for r, _ in samples], mode)
        image_tokens, totals = [], []
        for (record, sizes), rows in zip(samples, texts[mode], strict=True):
            if record.get("source") not in stage.sources:
                continue
            rows = _selected(record, rows, stage)
            if not rows:  # no turn of the stage's question types: the sample makes no row
                continue
            image = sum(images(size, stage.longest_edge) for size in sizes)
            image_tokens.append(image)
            totals.append([text - len(sizes) + image for text in rows])  # <image> -> expansion
        out.append(StageTokens(stage, image_tokens, [max(t) for t in totals],
                               sum(min(t) > model.max_length for t in totals)))
    return out, images.method


# ---- markdown ------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _split_table(counts: dict[str, dict[str, int]], name: str) -> str:
    splits = list(counts)
    keys = list(dict.fromkeys(k for per in counts.values() for k in per))
    rows = [[k, *(counts[s].get(k, 0) for s in splits), sum(counts[s].get(k, 0) for s in splits)]
            for k in keys]
    rows.append(["**total**", *(sum(counts[s].values()) for s in splits),
                 sum(sum(per.values()) for per in counts.values())])
    return _table([name, *splits, "all"], rows)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def _plot(name: str, plots: str | None, alt: str) -> str:
    """An embedded PNG (``plots`` = its folder, "" for beside the markdown) or its name."""
    if plots is None:
        return f"Plot: `{PLOTS.get(name, name)}` (MLflow artifacts of the data run)."
    return f"![{alt}]({plots}{PLOTS.get(name, name)})"


def _sizes_section(report: DataReport, plots: str | None) -> list[str]:
    rows = []
    for split, sizes in report.image_sizes.items():
        if not sizes:
            rows.append([split, 0, "-", "-", "-"])
            continue
        w, h = np.array(sizes).T
        aspect = w / h
        rows.append([split, len(sizes), f"{w.min()}x{h.min()}", f"{w.max()}x{h.max()}",
                     f"{aspect.min():.2f} - {aspect.max():.2f}"])
    return ["## Image sizes and aspect ratios",
            _table(["split", "images", "smallest", "largest", "aspect (w/h)"], rows),
            _plot("sizes", plots, "image sizes and aspect ratios")]


def _tokens_section(report: DataReport, plots: str | None) -> list[str]:
    if not report.tokens:
        return ["## Tokens per sample", report.token_method or "No token counts (no recipe given)."]
    rows = []
    for st in report.tokens:
        img, tot = np.array(st.image_tokens or [0]), np.array(st.total_tokens or [0])
        rows.append([st.stage.name, f"{st.stage.longest_edge} px", st.samples,
                     f"{np.median(img):.0f} / {img.max()}", f"{np.median(tot):.0f} / "
                     f"{np.percentile(tot, 99):.0f} / {tot.max()}",
                     f"{st.skipped} ({_share(st.skipped, st.samples)})"])
    return ["## Tokens per sample (training stages)",
            f"Train samples of each stage's sources at its resolution; {report.token_method}. "
            f"A sample none of whose rows fits `model.max_length` ({report.max_length}) is skipped "
            "by training (never truncated).",
            _table(["stage", "resolution", "samples", "image tokens (median / max)",
                    "total tokens (median / p99 / max)", "skipped: over max_length"], rows),
            _plot("tokens", plots, "image tokens and sample lengths per stage")]


def _modality_section(report: DataReport, plots: str | None) -> list[str]:
    rows = [[source, *(per[m] for m in MODALITIES), sum(per.values())]
            for source, per in report.modality.items()]
    rich = [[split, rich, images, _share(rich, images)]
            for split, (rich, images) in report.text_rich.items()]
    return ["## Modality mix per source (all splits)",
            _table(["source", *MODALITIES, "samples"], rows),
            "Text-rich images: images of the tasks " + ", ".join(f"`{t}`" for t in TEXT_RICH_TASKS)
            + " (by the records' task, not by looking at the pixels).",
            _table(["split", "text-rich images", "images", "share"], rich),
            _plot("modality", plots, "modality mix per source")]


def _pair_rows(rows: list[dict[str, Any]], limit: int = 20) -> list[list[Any]]:
    return [[r["key"], r["image"], r["suite"], r["suite_image"], r["kind"],
             f"{r['blurred']:.1f} / {r['excess']:.1f}"] for r in rows[:limit]]


def _contamination_section(report: DataReport, plots: str | None) -> list[str]:
    c = report.contamination
    if not c:
        return ["## Contamination", "No contamination report (the stage did not run)."]
    suites = [[name, s["images"], s["n_images"], s["train_samples"], s["exact"], s["near"]]
              for name, s in c["suites"].items()]
    mode = ("**quarantine**: these samples are left out of what training reads"
            if c["mode"] == "quarantine" else
            "**report**: these samples stay in training (`data.contamination: quarantine` "
            "leaves them out)")
    dup = c["train_duplicates"]
    parts = ["## Contamination: training images in the evaluation suites",
             f"Rule: a near-duplicate is {c['rule']} (exact: identical decoded pixels). "
             f"{c['train_images']:,} training images checked against every suite's images; "
             f"**{c['train_overlap']} training samples** overlap. Mode: {mode}.",
             _table(["suite", "images", "suite images", "overlapping train samples",
                     "exact pairs", "near pairs"], suites)]
    if c["overlap"]:
        parts += [f"First {min(20, len(c['overlap']))} of {len(c['overlap'])} matches "
                  "(distances: blurred / excess, see components/data/duplicates.py):",
                  _table(["train sample", "image", "suite", "suite image", "kind", "distances"],
                         _pair_rows(c["overlap"]))]
    parts += ["## Near-duplicates within the training split",
              f"{dup['pairs']} pairs ({dup['exact_pairs']} exact) among {dup['images']} images, "
              f"in {dup['groups']} groups: {dup['extra_copies']} images are copies of another "
              f"training image ({_share(dup['extra_copies'], c['train_images'])} of the training "
              "images).",
              _plot("duplicates", plots, "near-duplicate pairs")]
    return parts


def render_markdown(report: DataReport, version: str, grid_name: str = "samples.png",
                    plots: str | None = None, run_link: str | None = None) -> str:
    """The report as markdown (the Prefect artifact and the MLflow ``data_report.md``); with
    ``plots`` ("" = beside the markdown), the PNGs are embedded, else named."""
    quarantine = (_table(["where", "rule", "records"], [list(r) for r in report.quarantine])
                  if report.quarantine else "No record quarantined, no expectation failed.")
    checks = ", ".join(f"{s}: {v.get('n_rows', '?')} rows {'ok' if v.get('success') else 'FAILED'}"
                       for s, v in report.validation.items()) or "no validation report"
    grid = (f"![samples per source]({plots}{grid_name})" if plots is not None else
            f"Image grid (first samples of each source's train shards): MLflow artifact `{grid_name}`.")
    head = [f"# Data report, version `{version}`",
            f"{report.total:,} samples. Validation: {checks}."
            + (f" MLflow run: {run_link}." if run_link else "")]
    return "\n\n".join([
        *head,
        "## Samples per task and split", _split_table(report.tasks, "task"),
        "## Samples per source and split", _split_table(report.sources, "source"),
        "## Quarantine", quarantine,
        *_sizes_section(report, plots),
        *_tokens_section(report, plots),
        *_modality_section(report, plots),
        *_contamination_section(report, plots),
        "## Samples per source", grid,
    ]) + "\n"


# ---- plots ---------------------------------------------------------------------------------

def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, 2, figsize=(width, height), dpi=100)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _bins(values: list[np.ndarray], lo: float | None = None, hi: float | None = None,
          n: int = 40) -> np.ndarray:
    """Shared bins for several series: one per integer when the range is small (token counts,
    pixel sizes), else ``n`` equal ones; a constant series still gets a visible bar."""
    data = np.concatenate([np.asarray(v, dtype=float) for v in values if len(v)] or [np.zeros(1)])
    lo = data.min() if lo is None else lo
    hi = data.max() if hi is None else hi
    if hi - lo < n and float(lo).is_integer() and float(hi).is_integer():
        return np.arange(lo - 0.5, hi + 1.5)
    return np.linspace(lo, hi, n + 1)


def plot_sizes(report: DataReport, path: Path) -> Path:
    """Histograms of the longest image edge and of the aspect ratio, one series per split."""
    fig, (ax_size, ax_aspect) = _figure(9, 3.2)
    series = {split: np.array(sizes, dtype=float) for split, sizes in report.image_sizes.items() if sizes}
    edges = {s: np.maximum(v[:, 0], v[:, 1]) for s, v in series.items()}
    aspects = {s: np.log2(v[:, 0] / v[:, 1]) for s, v in series.items()}
    edge_bins = _bins(list(edges.values()), lo=0)
    aspect_bins = np.linspace(min(-1.0, *(a.min() for a in aspects.values())),
                              max(1.0, *(a.max() for a in aspects.values())), 41) if aspects else 10
    for split in series:
        ax_size.hist(edges[split], bins=edge_bins, alpha=0.6, label=f"{split} ({len(edges[split])})")
        ax_aspect.hist(aspects[split], bins=aspect_bins, alpha=0.6, label=split)
    ax_size.set(title="longest image edge", xlabel="pixels", ylabel="images")
    ax_aspect.set(title="aspect ratio", xlabel="log2(width / height)  (0 = square)")
    ax_size.legend(fontsize=8)
    return _save(fig, path)


def plot_tokens(report: DataReport, path: Path) -> Path:
    """Image tokens per sample at each stage resolution, and total tokens per sample against
    ``max_length`` per stage."""
    fig, (ax_img, ax_tot) = _figure(10, 3.4)
    per_edge: dict[int, list[int]] = {}
    for st in report.tokens:
        per_edge.setdefault(st.stage.longest_edge, st.image_tokens)
    image_bins = _bins(list(per_edge.values()), lo=0)
    for edge, tokens in per_edge.items():
        if tokens:
            ax_img.hist(tokens, bins=image_bins, alpha=0.6, label=f"{edge} px")
    totals = [st.total_tokens for st in report.tokens if st.total_tokens]
    total_bins = np.linspace(0, max([report.max_length, *(max(t) for t in totals)]) * 1.05, 80)
    for st in report.tokens:
        if st.total_tokens:
            ax_tot.hist(st.total_tokens, bins=total_bins, histtype="step", label=st.stage.name)
    if report.max_length:
        ax_tot.axvline(report.max_length, color="red", linestyle="--", label="max_length")
    ax_img.set(title="image tokens per sample", xlabel="tokens", ylabel="train samples")
    ax_tot.set(title="tokens per sample (longest row)", xlabel="tokens")
    ax_img.legend(fontsize=8)
    ax_tot.legend(fontsize=7)
    return _save(fig, path)


def plot_modality(report: DataReport, path: Path) -> Path:
    """Samples per source by modality (stacked), and the text-rich share of images per split."""
    fig, (ax_mod, ax_rich) = _figure(10, 3.4)
    sources = list(report.modality)
    bottom = np.zeros(len(sources))
    for m in MODALITIES:
        values = np.array([report.modality[s][m] for s in sources], dtype=float)
        ax_mod.barh(sources, values, left=bottom, label=m)
        bottom += values
    ax_mod.set(title="samples per source and modality", xlabel="samples")
    ax_mod.legend(fontsize=8)
    splits = list(report.text_rich)
    shares = [100 * r / n if n else 0 for r, n in report.text_rich.values()]
    ax_rich.bar(splits, shares)
    ax_rich.set(title="text-rich images (" + "/".join(TEXT_RICH_TASKS) + ")", ylabel="% of images")
    return _save(fig, path)


def duplicate_pairs_image(shards: Path, pairs: list[tuple[str, str, str]], suite_images: dict[str, Path],
                          cell: int = 80) -> Image.Image:
    """Pairs side by side (left: a training image, right: its match), two pairs a row, each
    labelled; ``pairs`` are (label, train image id, match id), ids as duplicates.py writes them."""
    if not pairs:
        image = Image.new("RGB", (4 * cell + 24, 40), "white")
        ImageDraw.Draw(image).text((6, 14), "no duplicate pair found", fill="black")
        return image
    wanted = {a for _, a, _ in pairs} | {b for _, _, b in pairs}
    images = _images_by_id(shards, wanted, suite_images)
    label_h, pair_w = 26, 2 * cell + 14
    grid = Image.new("RGB", (2 * pair_w, ((len(pairs) + 1) // 2) * (cell + label_h + 6)), "white")
    draw = ImageDraw.Draw(grid)
    for n, (label, a, b) in enumerate(pairs):
        x, y = (n % 2) * pair_w, (n // 2) * (cell + label_h + 6)
        for k, image_id in enumerate((a, b)):
            image = images.get(image_id)
            if image is not None:
                grid.paste(ImageOps.pad(image.convert("RGB"), (cell, cell), color="white"),
                           (x + k * (cell + 2), y))
        draw.text((x, y + cell + 1), label[: pair_w // 6], fill="black")
        draw.text((x, y + cell + 13), a.rpartition("/")[0][: pair_w // 6] or a[: pair_w // 6],
                  fill=(90, 90, 90))
    return grid


def _images_by_id(shards: Path, wanted: set[str], suite_images: dict[str, Path]) -> dict[str, Image.Image]:
    """Images by duplicates.py id: ``key/NNN.ext`` (train), ``split/key/NNN.ext`` (a data
    split), else a path under one of ``suite_images``' folders."""
    out = {}
    for split in ("train", "val", "test"):
        prefix = "" if split == "train" else f"{split}/"
        for path in sorted((shards / split).glob("*.tar")):
            with tarfile.open(path) as tar:
                for member in tar:
                    found = IMAGE_MEMBER.match(member.name)
                    image_id = found and f"{prefix}{found['key']}/{found['ext']}"
                    if found and image_id in wanted:
                        out[image_id] = Image.open(io.BytesIO(tar.extractfile(member).read()))
    for image_id in wanted - set(out):
        for folder in suite_images.values():
            path = Path(folder) / image_id
            if path.is_file():
                out[image_id] = Image.open(path)
                break
    return out


def plot_duplicates(report: DataReport, shards: Path, path: Path,
                    suite_images: dict[str, Path] | None = None) -> Path:
    """Example pairs: training images matching a suite's (first), then near-duplicates within
    the training split."""
    c = report.contamination
    pairs = [(f"{r['suite']}: {r['kind']}", r["key"] + "/" + r["image"], r["suite_image"])
             for r in c.get("overlap", [])[:DUPLICATE_EXAMPLES]]
    pairs += [(f"train: {m['kind']}", m["a"], m["b"])
              for m in c.get("train_duplicates", {}).get("examples", [])[:DUPLICATE_EXAMPLES]]
    image = duplicate_pairs_image(shards, pairs, suite_images or {})
    image.save(path)
    return path


def write_plots(report: DataReport, shards: Path, out: Path,
                suite_images: dict[str, Path] | None = None) -> list[Path]:
    """Every PNG of the report into ``out`` (names in ``PLOTS``)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_sizes(report, out / PLOTS["sizes"]), plot_modality(report, out / PLOTS["modality"])]
    if report.tokens:
        paths.append(plot_tokens(report, out / PLOTS["tokens"]))
    if report.contamination:
        paths.append(plot_duplicates(report, shards, out / PLOTS["duplicates"], suite_images))
    return paths


# ---- the sample grid -----------------------------------------------------------------------

def _text_tile(text: str, size: int) -> Image.Image:
    tile = Image.new("RGB", (size, size), (245, 245, 235))
    lines = textwrap.wrap(text, width=max(8, size // 6))[: size // 12]
    ImageDraw.Draw(tile).multiline_text((3, 3), "\n".join(lines), fill="black", spacing=1)
    return tile


def _tile(sample: Any, size: int) -> Image.Image:
    if not sample.images:
        messages = sample.record.get("messages") or []
        text = " ".join(p.get("text", "") for m in messages[:1] for p in
                        (m["content"] if isinstance(m["content"], list) else [{"text": m["content"]}]))
        return _text_tile(text or sample.key, size)
    image = ImageOps.contain(sample.images[0].convert("RGB"), (size, size), Image.NEAREST)
    tile = Image.new("RGB", (size, size), "white")
    tile.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return tile


def source_shards(shards_dir: str | Path, split: str = "train") -> dict[str, list[Path]]:
    """Shard files of a split grouped by source (``<source>-NNNN.tar``), in name order."""
    groups: dict[str, list[Path]] = {}
    for path in sorted((Path(shards_dir) / split).glob("*.tar")):
        groups.setdefault(path.stem.rsplit("-", 1)[0], []).append(path)
    return groups


def sample_grid(shards_dir: str | Path, split: str = "train", per_source: int = 6,
                cell: int = GRID_CELL) -> Image.Image:
    """One row per source: its name, then its first `per_source` samples (first image, or the
    prompt text for text-only samples)."""
    groups = source_shards(shards_dir, split) or source_shards(shards_dir, "test")
    grid = Image.new("RGB", (LABEL_WIDTH + per_source * (cell + 2), max(1, len(groups)) * (cell + 2)),
                     "white")
    draw = ImageDraw.Draw(grid)
    for row, (source, paths) in enumerate(groups.items()):
        y = row * (cell + 2)
        draw.text((4, y + cell // 2 - 6), source, fill="black")
        for col, sample in enumerate(read_samples(paths)):
            if col == per_source:
                break
            grid.paste(_tile(sample, cell), (LABEL_WIDTH + col * (cell + 2), y))
    return grid
