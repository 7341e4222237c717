"""Preference pairs from the model's own captions, minimally corrected (RLHF-V style).

Synthetic rejected captions name hallucinations the model may never make, and a chosen
caption that differs from the model's in many words spreads DPO's push over all of them.
Here the frozen reference (SFT) model captions each caption prompt greedily; where its
caption names an absent object, that caption becomes the rejected answer and the chosen
one is the same caption corrected: every object it names by colour gets its true shape
and place, a colour the scene lacks is dropped. The pair then differs only where the
model was wrong. Existence pairs and faithful captions keep the data's pair.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from components.data.sample import Sample
from components.data.synthetic.scene import SceneObject, caption
from components.evaluation.caption_hallucination import hallucinated_mentions, mentioned_objects
from components.evaluation.generate import generate_answers
from components.model.chat import ChatEncoder


def corrected_caption(answer: str, objects: list[dict]) -> str | None:
    """``answer`` with each named object replaced by the scene's object of that colour (each
    used once, in the caption's canonical form); None when it names no colour of the scene."""
    unused = [SceneObject(o["colour"], o["shape"], o["quadrant"]) for o in objects]
    named = []
    for colour, _ in mentioned_objects(answer):
        match = next((o for o in unused if o.colour == colour), None)
        if match is not None:
            unused.remove(match)
            named.append(match)
    return caption(named) if named else None


def _is_caption(sample: Sample) -> bool:
    return sample.record.get("hallucination") in ("object", "attribute")


class CorrectedCaptionPairs:
    """The preference stream with the reference model's hallucinated captions as rejected
    and their corrections as chosen.

    Captions are generated lazily, ``chunk`` prompts at a time, so a resumed stage sees the
    same pairs; the frozen reference captions a prompt once (``answers``, by sample key), a
    later epoch reuses it. ``judged`` counts caption prompts, ``replaced`` the pairs rewritten."""

    def __init__(self, samples: Iterable[Sample], reference, encoder: ChatEncoder, *,
                 chunk: int = 32, max_new_tokens: int = 32):
        self.samples, self.reference, self.encoder = samples, reference, encoder
        self.chunk, self.max_new_tokens = chunk, max_new_tokens
        self.judged = self.replaced = 0
        self.answers: dict[str, str] = {}

    def __iter__(self) -> Iterator[Sample]:
        stream = iter(self.samples)
        while chunk := list(itertools.islice(stream, self.chunk)):
            new = list({s.key: s for s in chunk if _is_caption(s) and s.key not in self.answers}.values())
            answers = generate_answers(self.reference, self.encoder,
                                       [(s.record["messages"], s.images) for s in new],
                                       max_new_tokens=self.max_new_tokens, batch_size=self.chunk)
            self.answers.update(zip((s.key for s in new), answers, strict=True))
            for sample in chunk:
                if _is_caption(sample):
                    sample = self._pair(sample, self.answers[sample.key])
                yield sample

    def _pair(self, sample: Sample, answer: str) -> Sample:
        self.judged += 1
        objects = sample.record["objects"]
        chosen = corrected_caption(answer, objects) if hallucinated_mentions(answer, objects) else None
        if chosen is None:
            return sample
        self.replaced += 1
        return Sample(sample.key, sample.images,
                      {**sample.record, "chosen": chosen, "rejected": answer, "answers": [chosen],
                       "rejected_from": "model"})
