"""Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) from pycocoevalcap's scorers.

Tokenization follows ``COCOEvalCap``: Stanford PTBTokenizer (``-lowerCase``, then pycocoevalcap's
punctuation filter) when a ``java`` executable is on PATH, else :func:`simple_tokenize`, a
regex approximation of that pipeline. METEOR always needs Java. ``CIDEr`` is pycocoevalcap's
``Cider`` (CIDEr-D, x10 scale); its IDF comes from the references of the whole call, so score a
corpus, not single captions (one image gives CIDEr 0).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Hashable, Mapping, Sequence

__all__ = ["caption_scores", "simple_tokenize"]

_CANONICAL = {"BLEU": "BLEU", "METEOR": "METEOR", "ROUGE_L": "ROUGE_L", "CIDER": "CIDEr"}
# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS: tokens dropped after PTB tokenization.
PTB_PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
     "...", ";"]  # fmt: skip
)
# PTB escapes brackets; with -lowerCase they come out lower-cased and so escape the filter.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_CLITIC = re.compile(r"(\w)(n't|'(?:s|re|ve|ll|d|m))\b")
_SPLIT_WORDS = re.compile(r"\b(gon|wan|got|lem|gim|can)(na|ta|me|not)\b")
_SPLIT_OK = {("gon", "na"), ("wan", "na"), ("got", "ta"), ("lem", "me"), ("gim", "me"), ("can", "not")}
_TOKEN = re.compile(
    r"-l[rsc]b-|-r[rsc]b-"  # escaped brackets
    r"|\w+(?:(?:[-/.]|(?<=[^\W\d_])'(?=[^\W\d_])|(?<=\d)[,:](?=\d))\w+)*"  # co-op 3.5 o'clock
    r"(?:(?<=\.[^\W\d_])\.)?"  # trailing period of u.s.a. / e.g.
    r"|'(?:s|re|ve|ll|d|m)\b"  # clitics split off above
    r"|['`]"  # single quotes, always dropped
    r"|[^\w\s'`]+"  # other symbol runs: $ % ?! -- ...
)


def simple_tokenize(text: str) -> str:
    """Java-free stand-in for PTBTokenizer + pycocoevalcap's punctuation removal.

    Lower-cases, drops double quotes, escapes brackets like PTB (``-lrb-`` ...), splits
    ``n't``/``'s``/``'re``/``'ve``/``'ll``/``'d``/``'m`` off their word (and ``gonna`` ->
    ``gon na`` ...), keeps hyphenated, slashed, numeric and ``u.s.a.``-style tokens whole, and
    drops quotes and the symbol runs that pycocoevalcap filters (``. , ? ! : ; - -- ...``).
    Differs from PTB mainly on its abbreviation list (``mr.`` -> ``mr``), HTML entities and
    ``@``/``#`` handles.
    """
    text = text.replace("\n", " ").lower().replace('"', " ")
    for bracket, escaped in _BRACKETS.items():
        text = text.replace(bracket, f" {escaped} ")
    text = _CLITIC.sub(r"\1 \2", text)
    text = _SPLIT_WORDS.sub(lambda m: " ".join(m.groups()) if m.groups() in _SPLIT_OK else m[0], text)
    return " ".join(t for t in _TOKEN.findall(text) if t not in PTB_PUNCTUATIONS)


def _canonical_metrics(metrics: Sequence[str]) -> set[str]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    wanted = set()
    for name in metrics:
        key = name.upper().replace("-", "_")
        if key not in _CANONICAL:
            raise ValueError(f"unknown caption metric {name!r}; choose from {sorted(_CANONICAL.values())}")
        wanted.add(_CANONICAL[key])
    return wanted


def _tokenize(
    captions: Mapping[Hashable, Sequence[str]], use_ptb: bool
) -> dict[Hashable, list[str]]:
    if use_ptb:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        return PTBTokenizer().tokenize(
            {k: [{"caption": c} for c in caps] for k, caps in captions.items()}
        )
    return {k: [simple_tokenize(c) for c in caps] for k, caps in captions.items()}


def caption_scores(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[str] = ("BLEU", "ROUGE_L", "CIDEr"),
) -> dict[str, float]:
    """Corpus caption scores keyed as ``COCOEvalCap.eval``.

    ``predictions`` maps an id to one caption, ``references`` the same ids to their reference
    captions. ``metrics`` (case-insensitive): ``BLEU`` (-> ``Bleu_1`` .. ``Bleu_4``),
    ``METEOR``, ``ROUGE_L``, ``CIDEr``. Raises ``RuntimeError`` for METEOR without Java.
    """
    wanted = _canonical_metrics(metrics)
    if set(predictions) != set(references):
        raise ValueError("predictions and references must have the same ids")
    if not predictions:
        raise ValueError("no captions to score")
    for key, refs in references.items():
        if isinstance(refs, str) or not refs:
            raise ValueError(f"id {key!r}: references must be a non-empty list of strings")
    use_java = shutil.which("java") is not None
    if "METEOR" in wanted and not use_java:
        raise RuntimeError(
            "METEOR needs Java: pycocoevalcap runs meteor-1.5.jar, and no `java` is on PATH "
            "(install a JRE or drop METEOR from metrics)"
        )

    res = _tokenize({k: [v] for k, v in predictions.items()}, use_java)
    gts = _tokenize(references, use_java)
    gts = {k: gts[k] for k in res}  # same key order for every scorer

    scores: dict[str, float] = {}
    if "BLEU" in wanted:
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores.update({f"Bleu_{n}": float(s) for n, s in enumerate(bleu, start=1)})
    if "METEOR" in wanted:
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()
        try:
            scores["METEOR"] = float(meteor.compute_score(gts, res)[0])
        finally:
            del meteor  # its __del__ stops the Java process
    if "ROUGE_L" in wanted:
        from pycocoevalcap.rouge.rouge import Rouge

        scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    if "CIDEr" in wanted:
        from pycocoevalcap.cider.cider import Cider

        scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores
