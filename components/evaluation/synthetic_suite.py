"""The held-out synthetic suite of the data stage: VQA per question type, OCR,
captions (CIDEr), text-only instructions and yes/no hallucination."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from components.data.sample import Sample, message_text, typed_turns
from components.evaluation.caption_hallucination import chair, hallucinated_mentions
from components.evaluation.caption_metrics import caption_scores
from components.evaluation.exact_match import exact_match
from components.evaluation.generate import generate_answers
from components.evaluation.yes_no import is_yes, yes_no_metrics
from components.model.chat import ChatEncoder


@dataclass
class SuiteResult:
    metrics: dict[str, float]
    rows: list[dict]  # one per question: key, task, qtype, question, prediction, answers, score


def prompt_messages(record: dict) -> list[dict]:
    """The user turn(s) of a single-question test record."""
    return [m for m in record["messages"] if m["role"] != "assistant"]


def as_questions(samples: Sequence[Sample]) -> list[Sample]:
    """Samples as single questions with reference answers. A test record is one already; a
    conversation (the val and train splits' `scenes_vqa`) becomes one sample per question
    (`typed_turns`), typed by the record's `qtypes` (an existence answer "no" marks the
    object absent)."""
    out = []
    for sample in samples:
        rec = sample.record
        if "answers" in rec:
            out.append(sample)
            continue
        base = {k: v for k, v in rec.items() if k not in ("messages", "qtypes")}
        for i, (qtype, (question, answer)) in enumerate(typed_turns(rec)):
            text = message_text(answer).strip()
            record = {**base, "messages": [question, answer], "answers": [text]}
            if qtype is not None:
                record["qtype"] = qtype
                if qtype == "existence":
                    record["absent"] = text.lower() == "no"
            out.append(Sample(f"{sample.key}/q{i}", sample.images, record))
    return out


def score_predictions(samples: Sequence[Sample], predictions: Sequence[str]) -> SuiteResult:
    """Metrics of predictions against the samples' reference answers."""
    rows, per_group = [], defaultdict(list)
    yes_no_preds, yes_no_labels = [], []
    captions_pred, captions_ref = {}, {}
    caption_objects: list[tuple[str, list[dict]]] = []
    for sample, pred in zip(samples, predictions, strict=True):
        rec = sample.record
        task, qtype = rec["task"], rec.get("qtype", "")
        score = exact_match(pred, rec["answers"])
        if task == "caption":
            captions_pred[sample.key], captions_ref[sample.key] = pred, rec["answers"]
            if "objects" in rec:
                caption_objects.append((pred, rec["objects"]))
        else:
            # VQA by question type (synthetic) or by source (a dataset's questions)
            per_group[f"vqa_{qtype or rec['source']}" if task == "vqa" else task].append(score)
            if task == "text" and "kind" in rec:
                per_group[f"text_{rec['kind']}"].append(score)
            for group in generalisation_groups(rec):
                per_group[group].append(score)
        if qtype == "existence":
            yes_no_preds.append(pred)
            yes_no_labels.append(not rec["absent"])
        question = message_text(prompt_messages(rec)[-1])
        row = {"key": sample.key, "task": task, "qtype": qtype, "question": question,
               "prediction": pred, "answers": rec["answers"], "score": score}
        if task == "caption" and "objects" in rec:
            row["hallucinated"] = hallucinated_mentions(pred, rec["objects"])
        rows.append(row)
    metrics = {f"{group}_accuracy": sum(v) / len(v) for group, v in sorted(per_group.items())}
    vqa = [s for g, v in per_group.items() if g.startswith("vqa_") for s in v]
    if vqa:
        metrics["vqa_accuracy"] = sum(vqa) / len(vqa)
    if yes_no_preds:
        yn = yes_no_metrics(yes_no_preds, yes_no_labels)
        metrics.update({f"existence_{k}": v for k, v in yn.items()})
    if captions_pred:
        scores = caption_scores(captions_pred, captions_ref, metrics=("CIDEr",))
        metrics["caption_cider"] = scores["CIDEr"]
    metrics.update(hallucination_metrics(yes_no_preds, yes_no_labels, caption_objects))
    return SuiteResult(metrics, rows)


def generalisation_groups(record: dict) -> list[str]:
    """The seen/unseen groups of a synthetic VQA question: ``phrasing_unseen`` and
    ``phrasing_unseen_colour`` for a colour question in a held-out phrasing (likewise
    ``seen``, and ``style_...`` for the image style)."""
    if record["task"] != "vqa":
        return []
    groups = []
    for factor in ("phrasing", "style"):
        if factor in record:
            group = f"{factor}_{record[factor]}"
            groups += [group, f"{group}_{record['qtype']}"]
    return groups


def hallucination_metrics(yes_no_preds: Sequence[str], yes_no_labels: Sequence[bool],
                          captions: Sequence[tuple[str, list[dict]]]) -> dict[str, float]:
    """Caption CHAIR and the pooled ``hallucination_rate``: the share of probes answered with
    an absent object, a probe being an absent-object "is there" question (said yes) or a
    scene caption (names an object the scene lacks)."""
    out: dict[str, float] = {}
    if captions:
        c = chair([p for p, _ in captions], [o for _, o in captions])
        out = {"caption_hallucination_rate": c["chair_s"], "caption_chair_i": c["chair_i"],
               "caption_object_recall": c["recall"]}
    absent = [p for p, present in zip(yes_no_preds, yes_no_labels, strict=True) if not present]
    probes = len(absent) + len(captions)
    if probes:
        said_yes = sum(is_yes(p) for p in absent)
        bad_captions = sum(bool(hallucinated_mentions(p, o)) for p, o in captions)
        out["hallucination_rate"] = (said_yes + bad_captions) / probes
    return out


def evaluate_suite(model, encoder: ChatEncoder, samples: Sequence[Sample], *,
                   max_new_tokens: int = 24, batch_size: int = 32) -> SuiteResult:
    """Generate an answer per test question, then score."""
    prompts = [(prompt_messages(s.record), s.images) for s in samples]
    predictions = generate_answers(model, encoder, prompts, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size)
    return score_predictions(samples, predictions)
