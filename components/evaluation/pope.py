"""POPE-style object-hallucination benchmark (Li et al., 2023) on held-out scene samples.

Every scene image gets one yes/no question per object it shows ("Is there a red circle in
the image?", answer yes) and, per negative sampler, as many questions about objects it does
not show (answer no), so each sampler's subset is balanced 50/50 and shares the positives:

* ``random``: absent objects drawn uniformly from all colour x shape objects;
* ``popular``: the absent objects that occur most often in the split;
* ``adversarial``: absent objects that share a colour or a shape with a present object
  (the binding errors a VLM makes), ranked by how often they co-occur with the present
  objects in the split, then by frequency.

Each sampler is scored with :func:`~components.evaluation.yes_no.yes_no_metrics`
("yes" is positive): accuracy, precision, recall, F1, yes-ratio, hallucination rate.
Draws depend only on ``seed`` and the sample key, never on order or process.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from components.data.sample import Sample
from components.data.synthetic.scene import COLOURS, QUADRANTS, SHAPES, indefinite
from components.evaluation.generate import generate_answers
from components.evaluation.suites import POPE_SAMPLERS, POPE_TEMPLATE
from components.evaluation.synthetic_suite import SuiteResult
from components.evaluation.yes_no import is_yes, yes_no_metrics
from components.model.chat import ChatEncoder

__all__ = [
    "SAMPLERS",
    "TEMPLATE",
    "PopeQuestion",
    "build_pope",
    "evaluate_pope",
    "pope_metrics",
    "pope_rows",
    "scene_objects",
    "select_images",
]

SAMPLERS = POPE_SAMPLERS
TEMPLATE = POPE_TEMPLATE
ALL_OBJECTS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)

Obj = tuple[str, str]  # (colour, shape)


@dataclass(frozen=True)
class PopeQuestion:
    """One probe: is ``colour shape`` in the image of ``sample_key``? (``present``: truth)."""

    sample_key: str
    sampler: str
    colour: str
    shape: str
    present: bool
    question: str

    @property
    def answer(self) -> str:
        return "yes" if self.present else "no"

    @property
    def object(self) -> str:
        return f"{self.colour} {self.shape}"


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256(":".join(map(str, ("pope", *parts))).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def scene_objects(key: str, record: Mapping) -> list[Obj]:
    """The (colour, shape) objects of a scene record, checked against the scene rules."""
    objects = record.get("objects")
    if not isinstance(objects, list) or not objects:
        raise ValueError(f"record {key!r}: 'objects' must be a non-empty list of "
                         "{colour, shape, quadrant} (a scene record)")
    out: list[Obj] = []
    quadrants: list[str] = []
    for i, o in enumerate(objects):
        where = f"record {key!r}: objects[{i}]"
        if not isinstance(o, Mapping):
            raise ValueError(f"{where}: must be an object with colour, shape and quadrant")
        for field, allowed in (("colour", COLOURS), ("shape", SHAPES), ("quadrant", QUADRANTS)):
            if o.get(field) not in allowed:
                raise ValueError(f"{where}: {field} {o.get(field)!r} is not one of {list(allowed)}")
        obj = (o["colour"], o["shape"])
        if obj in out:
            raise ValueError(f"{where}: {obj[0]} {obj[1]} appears twice (a scene has no "
                             "repeated colour and shape)")
        if o["quadrant"] in quadrants:
            raise ValueError(f"{where}: quadrant {o['quadrant']!r} is taken by another object")
        out.append(obj)
        quadrants.append(o["quadrant"])
    return out


def _negatives(key: str, present: list[Obj], sampler: str, seed: int,
               frequency: Counter, cooccurrence: Mapping[Obj, Counter]) -> list[Obj]:
    absent = [o for o in ALL_OBJECTS if o not in present]
    n = len(present)
    if len(absent) < n:
        raise ValueError(f"record {key!r}: {n} objects leave only {len(absent)} absent ones")
    if sampler == "random":
        return _rng(seed, key, sampler).sample(absent, n)
    if sampler == "popular":
        return sorted(absent, key=lambda o: (-frequency[o], o))[:n]
    if sampler == "adversarial":
        def rank(o: Obj) -> tuple:
            shared = sum(o[0] == p[0] or o[1] == p[1] for p in present)
            together = sum(cooccurrence[p][o] for p in present)
            return (-shared, -together, -frequency[o], o)
        return sorted(absent, key=rank)[:n]
    raise ValueError(f"unknown negative sampler {sampler!r}; expected one of {list(SAMPLERS)}")


def build_pope(
    records: Iterable[tuple[str, Mapping]],
    samplers: Sequence[str] = SAMPLERS,
    *,
    template: str = TEMPLATE,
    seed: int = 0,
) -> list[PopeQuestion]:
    """Balanced probes for (key, scene record) pairs: per sampler, per image, its objects then
    as many absent ones. Popularity and co-occurrence are counted over ``records``.

    ``template`` holds ``{object}``, filled with the object and its article ("a red circle").
    """
    if "{object}" not in template:
        raise ValueError(f"template {template!r} must contain '{{object}}'")
    unknown = [s for s in samplers if s not in SAMPLERS]
    if unknown or not samplers:
        raise ValueError(f"negative samplers {list(samplers)}: expected some of {list(SAMPLERS)}")
    scenes: dict[str, list[Obj]] = {}
    for key, record in records:
        if key in scenes:
            raise ValueError(f"record {key!r}: duplicate key")
        scenes[key] = scene_objects(key, record)
    if not scenes:
        raise ValueError("no scene records (records with 'objects') to build probes from")
    frequency: Counter = Counter(o for objs in scenes.values() for o in objs)
    cooccurrence: dict[Obj, Counter] = defaultdict(Counter)
    for objs in scenes.values():
        for a in objs:
            cooccurrence[a].update(b for b in objs if b != a)

    def ask(key: str, sampler: str, obj: Obj, present: bool) -> PopeQuestion:
        text = template.format(object=indefinite(f"{obj[0]} {obj[1]}"))
        return PopeQuestion(key, sampler, obj[0], obj[1], present, text)

    out: list[PopeQuestion] = []
    for sampler in samplers:
        for key, present in scenes.items():
            out += [ask(key, sampler, o, True) for o in present]
            negatives = _negatives(key, present, sampler, seed, frequency, cooccurrence)
            out += [ask(key, sampler, o, False) for o in negatives]
    return out


def pope_metrics(questions: Sequence[PopeQuestion], predictions: Sequence[str]) -> dict[str, float]:
    """``<sampler>_<metric>`` for each sampler present, plus ``mean_f1`` and ``mean_accuracy``."""
    if len(questions) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(questions)} questions")
    by_sampler: dict[str, tuple[list[str], list[bool]]] = {}
    for q, p in zip(questions, predictions, strict=True):
        preds, labels = by_sampler.setdefault(q.sampler, ([], []))
        preds.append(p)
        labels.append(q.present)
    metrics: dict[str, float] = {}
    for sampler, (preds, labels) in by_sampler.items():
        metrics.update({f"{sampler}_{k}": v for k, v in yes_no_metrics(preds, labels).items()})
    if by_sampler:
        for m in ("f1", "accuracy"):
            metrics[f"mean_{m}"] = sum(metrics[f"{s}_{m}"] for s in by_sampler) / len(by_sampler)
    return metrics


def pope_rows(questions: Sequence[PopeQuestion], predictions: Sequence[str]) -> list[dict]:
    """One table row per probe (score 1 when the yes/no reading is right)."""
    return [{"key": q.sample_key, "sampler": q.sampler, "object": q.object, "present": q.present,
             "question": q.question, "prediction": p, "answers": [q.answer],
             "score": float(is_yes(p) == q.present)}
            for q, p in zip(questions, predictions, strict=True)]


def select_images(samples: Sequence[Sample], n: int | None, seed: int = 0) -> list[Sample]:
    """The scene samples (records with ``objects``), or ``n`` of them picked by a hash of
    their key (so a subset mixes sources), in key order."""
    scenes = [s for s in samples if "objects" in s.record]
    if n is not None and n < len(scenes):
        def draw(s: Sample) -> bytes:
            return hashlib.sha256(f"pope:{seed}:{s.key}".encode()).digest()
        scenes = sorted(sorted(scenes, key=draw)[:n], key=lambda s: s.key)
    return scenes


def evaluate_pope(
    model,
    encoder: ChatEncoder,
    samples: Sequence[Sample],
    *,
    samplers: Sequence[str] = SAMPLERS,
    template: str = TEMPLATE,
    seed: int = 0,
    max_new_tokens: int = 4,
    batch_size: int = 32,
) -> SuiteResult:
    """Ask every probe of the scene ``samples`` (one image each); a question shared by several
    samplers (the positives) is generated once."""
    by_key: dict[str, Sample] = {}
    for s in samples:
        if len(s.images) != 1:
            raise ValueError(f"record {s.key!r}: a POPE probe needs exactly one image, "
                             f"the sample has {len(s.images)}")
        by_key[s.key] = s
    questions = build_pope(((s.key, s.record) for s in samples), samplers, template=template,
                           seed=seed)
    unique = list(dict.fromkeys((q.sample_key, q.question) for q in questions))
    prompts = [([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
                by_key[key].images) for key, text in unique]
    answers = generate_answers(model, encoder, prompts, max_new_tokens=max_new_tokens,
                               batch_size=batch_size)
    answer_of = dict(zip(unique, answers, strict=True))
    predictions = [answer_of[(q.sample_key, q.question)] for q in questions]
    return SuiteResult(pope_metrics(questions, predictions), pope_rows(questions, predictions))
