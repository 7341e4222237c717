"""Pre-flight of a recipe: before any stage does work, check that everything it names can be
reached and that its data fits the disk, so a run that cannot succeed fails in seconds with
one message naming everything missing (instead of, say, generating 190,000 images first and
then failing to load a hub backbone offline).

What is checked, for the stages a command will run (``due``):

- ``training``: every backbone of ``model:`` (``vision``, ``text``, ``fusion_vision``): a
  ``registered:<name>`` the backbones stage trains (when it is due) or the registry already
  holds; a local directory with a ``config.json``; a hub id in the local Hugging Face cache
  (config and weights) when the hub is offline (``HF_HUB_OFFLINE``), else answering on the hub.
- ``data``: every ``data.datasets`` source, split file and image folder exists; the data
  stage's estimated size fits the free disk of the workspace's filesystem.
- ``evaluate``: every file and folder of ``evaluate.suites`` (annotations, questions, items,
  images, a local judge model) exists.

The size estimate: samples per source and split (``data.splits``) x the shard bytes one sample
of that source takes at ``data.image_size`` (``SAMPLE_BYTES``, interpolated between measured
sizes) x ``WORKSPACE_COPIES`` (each shard lives in ``data/sources/``, in ``data/shards/`` and
once in the DVC cache: measured on the micro recipe, 9.8 MB for 2.95 MB of shards). The table
was measured on this project's generators with ``python -m components.recipe_checks measure``
(mean tar-member bytes of N generated samples per source and size, as `write_shard` stores
them); re-run it after changing a generator. External datasets are not in the estimate.

Library code: no Prefect, no MLflow; the caller passes what only it knows (whether a
registered model exists).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.model.spec import REGISTERED

DUE_STAGES: tuple[str, ...] = ("data", "backbones", "training", "evaluate")
WORKSPACE_COPIES = 3  # data/sources + data/shards + the DVC cache (shards are identical copies)
MARGIN = 1.1  # tokenizer, manifests, reports, estimate error
TAR_BLOCK = 512
SHARD_OVERHEAD = 2 * TAR_BLOCK + 10240  # end-of-archive blocks + padding to a tar record

# Mean bytes one sample of a source takes in a shard (tar headers and padding included), by
# generated image size: `python -m components.recipe_checks measure` on the 2-core dev machine
# (seed 0; 6 samples per source and size up to 256 px, 3 above; 4 min 43 s). Documents, charts
# and tables cap their own size; `text` and `instructions` have no image.
MEASURED_SIZES: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
SAMPLE_BYTES: dict[str, tuple[int, ...]] = {
    'scenes_caption': (5973, 9984, 25515, 86869, 327509, 1291093, 5137067),
    'scenes_vqa': (6059, 10240, 27221, 94891, 384000, 1518763, 6055936),
    'ocr': (5120, 8021, 18176, 56064, 16896, 32427, 68267),
    'text': (2048, 2048, 2048, 2048, 2048, 2048, 2048),
    'preference': (5632, 9557, 25173, 87211, 316416, 1247061, 4960939),
    'scenes_alt_caption': (5632, 9472, 23979, 81579, 312832, 1232725, 4905984),
    'scenes_relations': (6059, 10240, 26795, 92587, 353792, 1397589, 5564928),
    'ocr_wild': (4693, 6485, 8363, 15104, 14848, 27989, 60245),
    'digits': (5461, 8789, 21163, 68949, 173056, 664747, 2609493),
    'digits_large': (5632, 9131, 21845, 69632, 258048, 998059, 3929600),
    'documents': (25685, 25685, 56405, 120832, 187733, 187733, 187733),
    'charts': (9984, 9984, 11947, 17664, 30037, 30037, 30037),
    'tables': (8875, 10581, 24149, 49067, 95573, 207360, 451413),
    'counting': (5973, 10325, 26283, 90027, 348672, 1369771, 5445632),
    'geometry': (4096, 4096, 4523, 5205, 6656, 10923, 25088),
    'spot_difference': (9472, 17749, 49493, 175957, 726869, 2875221, 11453099),
    'interleaved': (13739, 25941, 74496, 266325, 919893, 3614891, 14398464),
    'instructions': (2133, 2133, 2133, 2133, 2048, 2048, 2048),
    'preference_hallucination': (5973, 10411, 27648, 96171, 360277, 1416875, 5639851),
}


@dataclass(frozen=True)
class Problem:
    """One thing a recipe names that cannot be reached (``where``: the recipe field)."""

    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.detail}"


class PreflightError(RuntimeError):
    """The recipe names things this machine cannot reach; the message lists every one."""

    def __init__(self, recipe: str, problems: list[Problem]):
        self.recipe, self.problems = recipe, problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"pre-flight of recipe {recipe!r} failed ({len(problems)} "
                         f"problem{'s' if len(problems) != 1 else ''}); nothing was run:\n{lines}")


def check_recipe(recipe: Any, *, due: Collection[str] = DUE_STAGES, base: Path | None = None,
                 registered: Callable[[str], bool] | None = None,
                 workspace: Path | None = None) -> list[Problem]:
    """Every problem of ``recipe`` for the stages ``due`` (see the module docstring). Relative
    paths are resolved against ``base`` (default: the working directory); ``registered(name)``
    says whether the model registry holds ``name``; ``workspace`` is the recipe's data workspace
    (its filesystem is the one the data stage fills)."""
    unknown = set(due) - set(DUE_STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; expected some of {list(DUE_STAGES)}")
    base = Path.cwd() if base is None else base
    problems: list[Problem] = []
    if "training" in due:
        problems += backbone_problems(recipe, "backbones" in due, base, registered)
    if "data" in due:
        problems += dataset_problems(recipe.data.datasets, base)
        if workspace is not None:
            problems += disk_problems(recipe.data, workspace)
    if "evaluate" in due:
        problems += suite_problems(recipe.evaluate.suites, base)
    return problems


def preflight(recipe: Any, **kwargs: Any) -> None:
    """`check_recipe`, raising `PreflightError` when anything is missing."""
    problems = check_recipe(recipe, **kwargs)
    if problems:
        raise PreflightError(recipe.name, problems)


# ---- backbones ---------------------------------------------------------------------------

def backbone_problems(recipe: Any, backbones_due: bool, base: Path,
                      registered: Callable[[str], bool] | None) -> list[Problem]:
    """Problems of the model section's backbone specs."""
    trained = set()
    if recipe.backbones is not None and backbones_due:
        trained = {recipe.backbones.vision.registered_model, recipe.backbones.text.registered_model}
    out = []
    for field in ("vision", "text", "fusion_vision"):
        spec = getattr(recipe.model, field)
        detail = backbone_problem(spec, base, trained, registered)
        if detail:
            out.append(Problem(f"model.{field}", detail))
    return out


def backbone_problem(spec: str | None, base: Path, trained: Collection[str],
                     registered: Callable[[str], bool] | None) -> str | None:
    """Why backbone ``spec`` cannot be loaded here, or None when it can."""
    if spec is None or spec == "inline":
        return None
    if spec.startswith(REGISTERED):
        name = spec.removeprefix(REGISTERED)
        if name in trained or (registered is not None and registered(name)):
            return None
        return (f"registered backbone {name!r} is not in the model registry and no backbones "
                "stage of this run trains it (run `vlmforge backbones --recipe ...` first, or "
                "name a recipe whose backbones section registers it)")
    path = (base / Path(spec).expanduser())
    if path.exists() or _looks_like_path(spec):
        if not path.is_dir():
            return f"directory {str(path)!r} does not exist"
        if not (path / "config.json").is_file():
            return f"directory {str(path)!r} has no config.json (not a saved transformers model)"
        return None
    return hub_problem(spec)


def _looks_like_path(spec: str) -> bool:
    """A hub id is `name` or `org/name`; anything else that names a folder is a path."""
    return spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1


def hub_offline() -> bool:
    """Whether Hugging Face hub downloads are off (the platform's default: HF_HUB_OFFLINE=1)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_problem(repo_id: str) -> str | None:
    """Why hub model ``repo_id`` cannot be loaded here: offline, it must be in the local cache
    with its config and weights; online, the hub must answer for its config."""
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        snapshot = Path(cached).parent
        if any(snapshot.glob("*.safetensors")) or any(snapshot.glob("*.bin")):
            return None
        where = f"is in the local Hugging Face cache ({constants.HF_HUB_CACHE}) without weights"
    else:
        where = f"is not in the local Hugging Face cache ({constants.HF_HUB_CACHE})"
    if hub_offline():
        return (f"hub model {repo_id!r} {where}, and the hub is offline (HF_HUB_OFFLINE=1): "
                f"download it where there is network (`huggingface-cli download {repo_id}`) "
                "and copy the cache, or name a local directory")
    from huggingface_hub import file_exists

    try:
        if file_exists(repo_id, "config.json"):
            return None
        return f"hub model {repo_id!r} has no config.json on the hub"
    except Exception as exc:  # noqa: BLE001 - any failure to reach the hub is the finding
        return f"hub model {repo_id!r} {where} and the hub cannot be reached ({type(exc).__name__}: {exc})"


# ---- datasets and suites -----------------------------------------------------------------

def dataset_problems(datasets: dict[str, Any], base: Path) -> list[Problem]:
    """Missing sources, split files and image folders of ``data.datasets``."""
    out = []
    for name, spec in datasets.items():
        resolved = spec.resolved(base)
        where = f"data.datasets.{name}"
        source = Path(resolved.source)
        if not source.exists():
            out.append(Problem(f"{where}.source", f"{str(source)!r} does not exist"))
            continue
        for split, file in (spec.files or {}).items():
            if not (source / file).exists():
                out.append(Problem(f"{where}.files.{split}", f"{str(source / file)!r} does not exist"))
        if not Path(resolved.images).is_dir():
            out.append(Problem(f"{where}.images", f"folder {resolved.images!r} does not exist"))
    return out


SUITE_FILES = ("annotations", "questions", "items")
SUITE_FOLDERS = ("images",)


def suite_problems(suites: dict[str, dict[str, Any]], base: Path) -> list[Problem]:
    """Missing files and folders of the recipe's ``evaluate.suites``."""
    if not suites:
        return []
    from components.evaluation.suites import parse_suites

    out = []
    for name, spec in parse_suites(suites, "evaluate.suites", base).items():
        where = f"evaluate.suites.{name}"
        for field in SUITE_FILES:
            value = getattr(spec, field)
            if value is not None and not Path(value).expanduser().is_file():
                out.append(Problem(f"{where}.{field}", f"file {value!r} does not exist"))
        for field in SUITE_FOLDERS:
            value = getattr(spec, field)
            if value is not None and not Path(value).expanduser().is_dir():
                out.append(Problem(f"{where}.{field}", f"folder {value!r} does not exist"))
        judge = spec.judge
        if judge is not None and judge.backend == "local" and not Path(judge.model).is_dir():
            out.append(Problem(f"{where}.judge.model", f"directory {judge.model!r} does not exist"))
    return out


# ---- disk --------------------------------------------------------------------------------

def sample_bytes(source: str, image_size: int) -> float:
    """Shard bytes of one sample of ``source`` at ``image_size`` px: linear between the measured
    sizes, the smallest measured value below them, growing with the pixel count above them."""
    row = SAMPLE_BYTES[source]
    sizes = MEASURED_SIZES
    if image_size <= sizes[0]:
        return float(row[0])
    if image_size >= sizes[-1]:
        return row[-1] * (image_size / sizes[-1]) ** 2
    i = next(i for i, s in enumerate(sizes) if s >= image_size)
    lo, hi = sizes[i - 1], sizes[i]
    t = (image_size - lo) / (hi - lo)
    return row[i - 1] + t * (row[i] - row[i - 1])


@dataclass(frozen=True)
class DataEstimate:
    samples: int
    shard_bytes: float

    @property
    def disk_bytes(self) -> float:
        """What the workspace needs: every shard in three places, plus a margin."""
        return self.shard_bytes * WORKSPACE_COPIES * MARGIN


def estimate_data(data: Any) -> DataEstimate:
    """The synthetic data's size from ``data.splits`` counts and ``data.image_size`` (each
    shard adds at most SHARD_OVERHEAD: the end-of-archive blocks and the record padding)."""
    samples, total = 0, 0.0
    for split in data.splits:
        for source, count in data.counts(split).items():
            samples += count
            total += count * sample_bytes(source, data.image_size)
            total += math.ceil(count / data.shard_size) * SHARD_OVERHEAD
    return DataEstimate(samples, total)


def data_unchanged(data: Any, workspace: Path) -> bool:
    """Whether the workspace already holds this data section's output (its dvc.lock exists
    and params.yaml carries the same data parameters): then nothing new is written."""
    try:
        if not (workspace / "dvc.lock").is_file():
            return False
        written = (yaml.safe_load((workspace / "params.yaml").read_text()) or {}).get("data") or {}
    except (OSError, yaml.YAMLError):
        return False
    wanted = data.stage_params()
    return {k: v for k, v in written.items() if k != "datasets"} == \
        {k: v for k, v in wanted.items() if k != "datasets"}


def free_bytes(path: Path) -> tuple[int, Path]:
    """Free bytes of the filesystem ``path`` is (or will be) on, and the existing folder asked."""
    probe = Path(path).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free, probe


def disk_problems(data: Any, workspace: Path) -> list[Problem]:
    """The data stage's estimated size against the free disk of the workspace."""
    if data_unchanged(data, workspace):
        return []
    estimate = estimate_data(data)
    free, probe = free_bytes(workspace)
    if estimate.disk_bytes <= free:
        return []
    return [Problem("data", (
        f"the data stage needs about {human_bytes(estimate.disk_bytes)} "
        f"({estimate.samples:,} samples at {data.image_size} px = "
        f"{human_bytes(estimate.shard_bytes)} of shards, x{WORKSPACE_COPIES} for data/sources, "
        f"data/shards and the DVC cache, +{round((MARGIN - 1) * 100)} %); "
        f"{human_bytes(free)} free on the filesystem of {probe} "
        "(lower data.splits or data.image_size, or set VLMFORGE_HOME on a larger disk)"))]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ---- measuring the table -----------------------------------------------------------------

def member_bytes(entry: dict[str, Any]) -> int:
    """Bytes the members of one webdataset sample take in a shard: each member's headers as
    `write_members` writes them (the PAX format adds an extended header for the float mtime)
    plus its data padded to the tar block."""
    import tarfile

    from components.data.shards import TAR_MTIME

    total = 0
    for name, data in entry.items():
        if name == "__key__":
            continue
        info = tarfile.TarInfo(f"{entry['__key__']}.{name}")
        info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o444
        info.uname = info.gname = "bigdata"
        total += len(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        total += math.ceil(len(data) / TAR_BLOCK) * TAR_BLOCK
    return total


def measure(source: str, image_size: int, samples: int, seed: int = 0) -> int:
    """Mean shard bytes of ``samples`` generated samples of ``source`` at ``image_size``."""
    from components.data.corpus import generate_sample
    from components.data.shards import sample_to_wds

    sizes = [member_bytes(sample_to_wds(generate_sample(source, seed, "train", i * 97, image_size)))
             for i in range(samples)]
    return round(sum(sizes) / samples)


def measure_table(sizes: tuple[int, ...] = MEASURED_SIZES, samples: int = 6) -> Iterator[
        tuple[str, tuple[int, ...]]]:
    """(source, bytes per size) for every synthetic source."""
    from components.data.synthetic import SOURCES

    for source in SOURCES:
        yield source, tuple(measure(source, s, max(2, samples if s <= 256 else samples // 2))
                            for s in sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.recipe_checks",
                                     description="measure the SAMPLE_BYTES table")
    parser.add_argument("command", choices=["measure"])
    parser.add_argument("--sizes", default=",".join(map(str, MEASURED_SIZES)))
    parser.add_argument("--samples", type=int, default=6)
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    print(f"MEASURED_SIZES = {sizes}")
    for source, row in measure_table(sizes, args.samples):
        print(f"    {source!r}: {row},", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
