"""Exact and near-duplicate images: between the training split and every evaluation suite a
recipe names (contamination), and within the training split.

**The rule.** Two images are *exact* duplicates when their decoded RGB pixels are identical
(a PNG re-save is exact). They are *near* duplicates when one is the other up to resizing by
a factor >= ``RULE_MIN_SCALE`` (any enlargement, reductions down to half the size) and JPEG
re-encoding at quality >= ``RULE_MIN_QUALITY``. Crops, flips and edits are not covered; a
global colour shift of a few levels is tolerated (background tints 17 levels apart pass).

**Two stages.** A plain perceptual hash (dHash) cannot separate copies from distinct images on
small synthetic scenes, so:

1. *Candidates* (cheap, high recall): a 12x12 area-averaged RGB thumbnail per image; pairs
   with an RMS thumbnail distance <= ``CANDIDATE_RMS`` (and the same aspect ratio) are
   candidates, found by chunked matrix products over the whole split.
2. *Verification* (tolerant to re-encoding and enlargement, sensitive to content): both
   images at the smaller one's size (longest edge at most ``VERIFY_EDGE``), blurred
   (Gaussian, ``BLUR_SIGMA`` px) so that JPEG noise, chroma subsampling and resampling
   averages out while a changed object, colour or word leaves a blob; ``blurred`` is the 4th
   largest per-pixel colour difference, ``excess`` the same after forgiving each pixel half of
   the edge strength both images share there (re-encoding errors sit on edges present in
   both; a changed shape puts an edge in one image only). A pair is a near duplicate when
   ``blurred <= MAX_BLURRED`` and ``excess <= MAX_EXCESS``.

The thresholds are measured on the tiny recipe's data (docs/architecture.md, "Per-source
stages, mixtures, data report"): the 20,800 planted copies within the rule reach at most
blurred 26 / excess 16.5 and all pass; of 14,535 candidate pairs of clean images whose
annotated content differs (objects, or OCR text) the closest reaches blurred 30, and none
passes.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from components.data.params import CONTAMINATION_MODES
from components.data.union_find import DisjointSets

THUMB_SIZE = 12
CANDIDATE_RMS = 0.07  # stage 1: RMS distance of the 12x12 thumbnails (pixel values in 0..1)
MAX_ASPECT_CHANGE = 0.05  # resizing keeps the aspect ratio (up to rounding at small sizes)
VERIFY_BATCH = 512  # pairs verified in one vectorised step
VERIFY_EDGE = 64  # stage 2 compares at the smaller image's size, longest edge at most this
BLUR_SIGMA = 2.0
EDGE_SIGMA = 1.0
MAX_BLURRED = 28.0  # 4th largest blurred colour difference (0..255)
MAX_EXCESS = 18.0  # the same, less half the edge strength both images share
RULE_MIN_SCALE = 0.5
RULE_MIN_QUALITY = 75
RULE = (f"the same image up to resizing by a factor >= {RULE_MIN_SCALE} and JPEG re-encoding "
        f"at quality >= {RULE_MIN_QUALITY}")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_MEMBER = re.compile(r"^(?P<key>[^.]+)\.(?P<image>\d{3}\.\w+)$")
CHUNK = 1024
KEEP_PIXELS = 64 * 2**20  # an index keeps its decoded images up to this many pixels in all
MODES = CONTAMINATION_MODES

# re-iterable (id, image) pairs; given a set of ids, only those images are decoded and yielded
ImageSource = Callable[..., Iterator[tuple[str, Image.Image]]]


@dataclass
class ImageIndex:
    """What stage 1 needs of every image: its id, size, pixel digest and thumbnail; and the
    decoded images themselves while they fit in ``KEEP_PIXELS`` (stage 2 then reads nothing
    again)."""

    ids: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    thumbs: np.ndarray = field(default_factory=lambda: np.zeros((0, 3 * THUMB_SIZE**2), np.float32))
    images: dict[str, Image.Image] | None = None  # None: more than KEEP_PIXELS, read again

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Match:
    """One duplicate pair: ``a`` (a training image) and ``b`` (a suite's or another training
    image), exact or near, with its stage-1 and stage-2 distances."""

    a: str
    b: str
    kind: str  # "exact" | "near"
    rms: float
    blurred: float
    excess: float


def rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def pixel_digest(image: Image.Image) -> str:
    """Equal for equal decoded pixels, whatever the file format."""
    image = rgb(image)
    return hashlib.sha1(f"{image.size}".encode() + image.tobytes()).hexdigest()


def thumbnail(image: Image.Image) -> np.ndarray:
    """The stage-1 vector: a 12x12 area average of the RGB image, values in 0..1."""
    small = rgb(image).resize((THUMB_SIZE, THUMB_SIZE), Image.BOX)
    return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0


def build_index(images: Iterable[tuple[str, Image.Image]], keep_pixels: int = KEEP_PIXELS) -> ImageIndex:
    index, thumbs, kept, pixels = ImageIndex(), [], {}, 0
    for image_id, image in images:
        image = rgb(image)
        index.ids.append(image_id)
        index.sizes.append(image.size)
        index.digests.append(pixel_digest(image))
        thumbs.append(thumbnail(image))
        pixels += image.width * image.height
        if kept is not None and pixels > keep_pixels:
            kept = None  # too many to keep: stage 2 reads its candidates again
        if kept is not None:
            kept[image_id] = image
    if thumbs:
        index.thumbs = np.stack(thumbs)
    index.images = kept
    return index


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(np.log((a[0] / a[1]) / (b[0] / b[1]))) <= MAX_ASPECT_CHANGE


def candidate_pairs(a: ImageIndex, b: ImageIndex | None = None,
                    max_rms: float = CANDIDATE_RMS) -> list[tuple[int, int, float]]:
    """Stage 1: (i, j, rms) for thumbnails within ``max_rms`` and the same aspect ratio; with
    ``b`` None, the pairs i < j within ``a``."""
    within = b is None
    b = a if b is None else b
    if not len(a) or not len(b):
        return []
    dim = a.thumbs.shape[1]
    sq_b = (b.thumbs**2).sum(1)
    out = []
    for start in range(0, len(a), CHUNK):
        block = a.thumbs[start:start + CHUNK]
        d2 = (block**2).sum(1)[:, None] + sq_b[None] - 2.0 * block @ b.thumbs.T
        rms = np.sqrt(np.maximum(d2, 0.0) / dim)
        for i, j in zip(*np.nonzero(rms <= max_rms), strict=True):
            i = int(i) + start
            if (within and j <= i) or not _same_aspect(a.sizes[i], b.sizes[j]):
                continue
            out.append((i, int(j), float(rms[i - start, j])))
    return out


def _compare_size(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    w, h = min(a, b, key=lambda s: s[0] * s[1])
    scale = min(1.0, VERIFY_EDGE / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _channel_max(x: np.ndarray) -> np.ndarray:
    """``x.max(-1)`` over an RGB last axis, as two elementwise maxima (numpy reduces a short
    last axis slowly)."""
    return np.maximum(np.maximum(x[..., 0], x[..., 1]), x[..., 2])


def _sobel(x: np.ndarray, axis: int, across: tuple[int, ...]) -> np.ndarray:
    """``scipy.ndimage.sobel`` of each image: the derivative along ``axis``, smoothed along the
    ``across`` axes only (ndimage's own would smooth across the stacked images too)."""
    from scipy import ndimage

    out = ndimage.correlate1d(x, [-1, 0, 1], axis, mode="nearest")
    for other in across:
        out = ndimage.correlate1d(out, [1, 2, 1], other, mode="nearest")
    return out


def _at_size(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` in RGB at ``size`` (Lanczos down, bicubic up)."""
    if image.size != size:
        image = image.resize(size, Image.LANCZOS if image.width > size[0] else Image.BICUBIC)
    return rgb(image)


def verify_features(images: list[Image.Image], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Stage-2 features of each image at ``size``, stacked on a first axis: the blurred RGB
    pixels, and the edge strength (Sobel magnitude per unit step, strongest channel) spread
    over the 3x3 neighbourhood, so that a one-pixel shift of an edge still counts as shared.
    Both rounded to uint8: an error of at most 1 against thresholds of 16 and 27. Every filter
    works within each image (no smoothing across the first axis)."""
    from scipy import ndimage

    pixels = np.stack([np.asarray(_at_size(im, size), dtype=np.float32) for im in images])
    blurred = ndimage.gaussian_filter(pixels, (0, BLUR_SIGMA, BLUR_SIGMA, 0))
    smooth = ndimage.gaussian_filter(pixels, (0, EDGE_SIGMA, EDGE_SIGMA, 0))
    gx = _sobel(smooth, axis=2, across=(1, 3))
    gy = _sobel(smooth, axis=1, across=(2, 3))
    edges = ndimage.maximum_filter(_channel_max(np.hypot(gx, gy) / 8.0), (1, 3, 3))
    return (np.clip(np.rint(blurred), 0, 255).astype(np.uint8),
            np.clip(np.rint(edges), 0, 255).astype(np.uint8))


def _kth_largest(values: np.ndarray, k: int = 4) -> np.ndarray:
    """The k-th largest value of each item (first axis) of ``values``."""
    flat = values.reshape(len(values), -1)
    k = min(k, flat.shape[1])
    return np.partition(flat, -k, axis=1)[:, -k]


def _distances(fa: tuple[np.ndarray, np.ndarray], fb: tuple[np.ndarray, np.ndarray],
               skip_far: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, excess) of a batch of pairs: features stacked on a first axis. ``skip_far``:
    a pair with blurred > MAX_BLURRED is no near duplicate whatever its excess, which is then
    left uncomputed (inf); that saves most of the work on pages that look alike."""
    diff = _channel_max(np.maximum(fa[0], fb[0]) - np.minimum(fa[0], fb[0]))
    blurred = _kth_largest(diff)
    excess = np.full(len(diff), np.inf)
    close = np.nonzero(blurred <= MAX_BLURRED)[0] if skip_far else np.arange(len(diff))
    if len(close):
        shared = np.minimum(fa[1][close], fb[1][close])
        excess[close] = _kth_largest(diff[close] - 0.5 * shared)
    return blurred.astype(np.float64), excess


def verify_distances(a: Image.Image, b: Image.Image) -> tuple[float, float]:
    """Stage 2: (blurred, excess) colour differences of two images at the smaller one's size
    (see the module docstring); both 0 for identical pixels."""
    size = _compare_size(a.size, b.size)
    blurred, excess = _distances(verify_features([a], size), verify_features([b], size))
    return float(blurred[0]), float(excess[0])


def is_near_duplicate(blurred: float, excess: float) -> bool:
    return blurred <= MAX_BLURRED and excess <= MAX_EXCESS


def resized_copy(image: Image.Image, scale: float, quality: int | None,
                 resample: int = Image.BICUBIC) -> Image.Image:
    """A copy as the rule describes it: resized by ``scale``, then JPEG re-encoded at
    ``quality`` (None: kept lossless). What the tests plant and the measurements vary."""
    image = image.convert("RGB")  # a loaded copy, whatever the mode
    if scale != 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             resample)
    if quality is None:
        return image
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


class _Verifier:
    """Stage 2 over many pairs: each image's features computed once per compare size, the
    missing ones of a batch together."""

    def __init__(self, a: dict[str, Image.Image], b: dict[str, Image.Image] | None = None):
        self.sides = {"a": a, "b": a if b is None else b}
        self.shared = b is None  # within one split: one cache for both sides
        self.cache: dict[tuple[str, str, tuple[int, int]], tuple[np.ndarray, np.ndarray]] = {}

    def _key(self, side: str, image_id: str, size: tuple[int, int]) -> tuple[str, str, tuple[int, int]]:
        return ("a" if self.shared else side, image_id, size)

    def _stacked(self, side: str, ids: list[str], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The features of ``ids`` on one side, stacked (computing the missing ones at once)."""
        missing = list(dict.fromkeys(i for i in ids if self._key(side, i, size) not in self.cache))
        if missing:
            blurred, edges = verify_features([self.sides[side][i] for i in missing], size)
            for n, image_id in enumerate(missing):
                self.cache[self._key(side, image_id, size)] = (blurred[n], edges[n])
        found = [self.cache[self._key(side, i, size)] for i in ids]
        return np.stack([f[0] for f in found]), np.stack([f[1] for f in found])

    def __call__(self, pairs: list[tuple[str, str]]) -> list[tuple[float, float]]:
        """(blurred, excess) of each pair, computed in batches of pairs of one compare size."""
        out: list[tuple[float, float] | None] = [None] * len(pairs)
        by_size: dict[tuple[int, int], list[int]] = {}
        for n, (a, b) in enumerate(pairs):
            size = _compare_size(self.sides["a"][a].size, self.sides["b"][b].size)
            by_size.setdefault(size, []).append(n)
        for size, members in by_size.items():
            for start in range(0, len(members), VERIFY_BATCH):
                batch = members[start:start + VERIFY_BATCH]
                blurred, excess = _distances(self._stacked("a", [pairs[n][0] for n in batch], size),
                                             self._stacked("b", [pairs[n][1] for n in batch], size),
                                             skip_far=True)
                for n, bl, ex in zip(batch, blurred, excess, strict=True):
                    out[n] = (float(bl), float(ex))
        return out  # type: ignore[return-value]


def _load(source: ImageSource, index: ImageIndex, wanted: set[str]) -> dict[str, Image.Image]:
    """The ``wanted`` images: from the index when it kept them, else read again."""
    if index.images is not None:
        return {i: index.images[i] for i in wanted}
    return {i: rgb(im) for i, im in source(wanted)} if wanted else {}


def find_duplicates(a_source: ImageSource, b_source: ImageSource | None = None, *,
                    a_index: ImageIndex | None = None, b_index: ImageIndex | None = None,
                    ) -> list[Match]:
    """Every exact or near duplicate pair between ``a`` and ``b`` (or within ``a`` when
    ``b_source`` is None), sorted. Indexes built already can be passed in; the images of
    candidate pairs come from the index when it kept them, else are read again."""
    a_index = a_index if a_index is not None else build_index(a_source())
    within = b_source is None
    ref = a_index if within else (b_index if b_index is not None else build_index(b_source()))
    pairs = candidate_pairs(a_index, None if within else ref)
    near = [(i, j, r) for i, j, r in pairs if a_index.digests[i] != ref.digests[j]]
    if within:
        verify = _Verifier(_load(a_source, a_index, {a_index.ids[k] for i, j, _ in near for k in (i, j)}))
    else:
        verify = _Verifier(_load(a_source, a_index, {a_index.ids[i] for i, _, _ in near}),
                           _load(b_source, ref, {ref.ids[j] for _, j, _ in near}))
    matches = [Match(a_index.ids[i], ref.ids[j], "exact", round(r, 4), 0.0, 0.0)
               for i, j, r in pairs if a_index.digests[i] == ref.digests[j]]
    distances = verify([(a_index.ids[i], ref.ids[j]) for i, j, _ in near])
    for (i, j, r), (blurred, excess) in zip(near, distances, strict=True):
        if is_near_duplicate(blurred, excess):
            matches.append(Match(a_index.ids[i], ref.ids[j], "near", round(r, 4),
                                 round(blurred, 2), round(excess, 2)))
    return sorted(matches, key=lambda m: (m.a, m.b))


# ---- where images come from --------------------------------------------------------------

def shard_images(shards: Iterable[str | Path], prefix: str = "") -> ImageSource:
    """The images of webdataset shards as ``{prefix}{key}/{NNN.ext}``, read member by member
    with tarfile (importing webdataset would import torch)."""
    paths = [Path(p) for p in shards]

    def read(wanted: Collection[str] | None = None) -> Iterator[tuple[str, Image.Image]]:
        for path in paths:
            with tarfile.open(path) as tar:
                for member in tar:
                    found = IMAGE_MEMBER.match(member.name)
                    image_id = found and f"{prefix}{found['key']}/{found['image']}"
                    if found and member.isfile() and (wanted is None or image_id in wanted):
                        image = Image.open(io.BytesIO(tar.extractfile(member).read()))
                        image.load()
                        yield image_id, image
    return read


def file_images(files: Iterable[str | Path], root: str | Path | None = None) -> ImageSource:
    """Image files as ``path`` (relative to ``root`` when given); unreadable files are skipped
    (the suite's own loader reports them)."""
    paths = sorted(Path(f) for f in files)

    def read(wanted: Collection[str] | None = None) -> Iterator[tuple[str, Image.Image]]:
        for path in paths:
            image_id = str(path.relative_to(root)) if root else str(path)
            if wanted is not None and image_id not in wanted:
                continue
            try:
                with Image.open(path) as image:
                    image.load()
                    loaded = rgb(image)
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
            yield image_id, loaded
    return read


def folder_images(folder: str | Path) -> ImageSource:
    """Every image file under ``folder`` (by suffix, recursively), ids relative to it."""
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return file_images(files, folder)


def suite_source(spec: dict[str, Any], shards_dir: str | Path) -> tuple[str, ImageSource]:
    """A suite's images from its params.yaml entry: ``{split}`` (the data's own split),
    ``{images}`` (a folder) or ``{items}`` (an MCQ items file naming image files)."""
    if "split" in spec:
        paths = sorted((Path(shards_dir) / spec["split"]).glob("*.tar"))
        return f"data split {spec['split']}", shard_images(paths, f"{spec['split']}/")
    if "images" in spec:
        return f"folder {spec['images']}", folder_images(spec["images"])
    if "items" in spec:  # MCQ JSONL: an optional `image` per line, relative to the file
        items = Path(spec["items"])
        rows = [json.loads(line) for line in items.read_text().splitlines() if line.strip()]
        files = {(items.parent / r["image"]).resolve() for r in rows
                 if isinstance(r, dict) and isinstance(r.get("image"), str)}
        return f"items {spec['items']}", file_images(sorted(files))
    raise ValueError(f"suite entry {spec!r}: give split, images or items")


# ---- the contamination stage ---------------------------------------------------------------

DEFAULT_SUITES = {"synthetic": {"split": "test"}}  # the default suite: the data's test split


def _key(image_id: str) -> tuple[str, str]:
    key, _, image = image_id.rpartition("/")
    return key, image


def contamination(shards_dir: str | Path, suites: dict[str, dict[str, Any]], mode: str,
                  examples: int = 20) -> dict[str, Any]:
    """The training split against every suite's images (what the ``contamination`` stage
    writes): each overlapping training image with the suite image it matches, the keys
    quarantined (``mode: quarantine``), and the near-duplicates within the training split."""
    if mode not in MODES:
        raise ValueError(f"contamination mode {mode!r}; expected one of {list(MODES)}")
    train = shard_images(sorted((Path(shards_dir) / "train").glob("*.tar")))
    train_index = build_index(train())
    overlap, summary = [], {}
    for name, spec in sorted(suites.items()):
        where, source = suite_source(spec, shards_dir)
        index = build_index(source())
        found = find_duplicates(train, source, a_index=train_index, b_index=index)
        for m in found:
            key, image = _key(m.a)
            overlap.append({"key": key, "image": image, "suite": name, "suite_image": m.b,
                            "kind": m.kind, "rms": m.rms, "blurred": m.blurred, "excess": m.excess})
        summary[name] = {"images": where, "n_images": len(index),
                         "train_samples": len({_key(m.a)[0] for m in found}),
                         "exact": sum(m.kind == "exact" for m in found),
                         "near": sum(m.kind == "near" for m in found)}
    within = find_duplicates(train, a_index=train_index)
    keys = sorted({row["key"] for row in overlap})
    return {
        "mode": mode, "rule": RULE,
        "thresholds": {"candidate_rms": CANDIDATE_RMS, "max_blurred": MAX_BLURRED,
                       "max_excess": MAX_EXCESS, "blur_sigma": BLUR_SIGMA,
                       "verify_edge": VERIFY_EDGE},
        "train_images": len(train_index),
        "train_overlap": len(keys),
        "suites": summary,
        "overlap": sorted(overlap, key=lambda r: (r["key"], r["image"], r["suite"], r["suite_image"])),
        "quarantined": keys if mode == "quarantine" else [],
        "train_duplicates": duplicate_summary(within, examples),
    }


def duplicate_summary(matches: list[Match], examples: int = 20) -> dict[str, Any]:
    """Near-duplicate pairs within one split, grouped (union-find) into sets of copies."""
    sets = DisjointSets()
    for m in matches:
        sets.union(m.a, m.b)
    groups = sets.groups()
    images = sum(len(g) for g in groups.values())
    return {"pairs": len(matches), "exact_pairs": sum(m.kind == "exact" for m in matches),
            "images": images, "groups": len(groups),
            "extra_copies": images - len(groups),
            "examples": [asdict(m) for m in matches[:examples]]}


def quarantined_keys(shards_dir: str | Path) -> frozenset[str]:
    """The training keys the contamination stage quarantined (``data/contamination.json``
    beside the shards), empty in report mode or without the stage."""
    path = Path(shards_dir).parent / "contamination.json"
    if not path.exists():
        return frozenset()
    report = json.loads(path.read_text())
    return frozenset(report.get("quarantined") or []) if report.get("mode") == "quarantine" \
        else frozenset()
