"""TRL's preference datasets (``DPOTrainer`` input), JSONL or parquet (a file or a folder).

Explicit prompt, either TRL form::

    {"prompt": "...", "chosen": "...", "rejected": "..."}                       # standard
    {"prompt": [{"role": "user", "content": ...}, ...],                          # conversational
     "chosen": [{"role": "assistant", "content": ...}],
     "rejected": [{"role": "assistant", "content": ...}]}

or an implicit prompt (no ``prompt``: ``chosen`` / ``rejected`` are whole conversations whose
common leading turns are the prompt, as TRL's ``maybe_extract_prompt`` reads them).
``content`` is a string or a list of ``{"type": "text", "text"}`` / ``{"type": "image"}``
parts; ``images`` (a list) or ``image`` holds the images as paths under ``--images``, bytes,
``{"bytes", "path"}`` structs or URLs resolved locally (``images.url_file_names``).

The record is the preference contract: ``messages`` = the prompt turns (kept as turns; a
multi-turn prompt stays multi-turn), ``chosen`` / ``rejected`` = the answer texts,
``answers`` = [chosen]. When the prompt has no image part but images are given, they go
before the first user text, as TRL's ``prepare_multimodal_messages`` places them; otherwise
the image parts must match the images in number (``placeholder_mismatch``). An answer is
one assistant turn of text. Anything else is quarantined with the rule it broke.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.data.ingest.fields import as_text, field
from components.data.ingest.images import as_image_ref
from components.data.ingest.records import Candidate, Item, map_rows, table_rows
from components.data.quarantine import Reject
from components.data.sample import image_placeholders, user_turn

if TYPE_CHECKING:
    from components.data.ingest.limits import Limits

FORMAT = "trl-preference"
TASKS = ("preference",)
SUFFIXES = (".jsonl", ".parquet")
ROLES = ("system", "user", "assistant")


def read(path: Path, images: Path | None, limits: Limits) -> Iterator[Item]:
    """The rows of one JSONL or parquet file."""
    yield from map_rows(table_rows(path, limits), FORMAT, path.stem, mapper, ("id", "idx"))


def mapper(row: Any, key: str) -> Candidate:
    chosen_in = field(row, "chosen", (str, bytes, list))
    rejected_in = field(row, "rejected", (str, bytes, list))
    if row.get("prompt") is None:
        prompt, chosen_in, rejected_in = _implicit_prompt(chosen_in, rejected_in)
    else:
        prompt = _prompt(field(row, "prompt", (str, bytes, list)))
    refs = [as_image_ref(im, f"images[{i}]") for i, im in enumerate(_image_cells(row))]
    if refs and not image_placeholders(prompt):
        prompt = _with_images(prompt, len(refs))
    chosen, rejected = _answer(chosen_in, "chosen"), _answer(rejected_in, "rejected")
    record = {
        "task": "preference",
        "source": FORMAT,
        "messages": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "answers": [chosen],
    }
    return Candidate(key, "", record, refs)


def _image_cells(row: dict[str, Any]) -> list[Any]:
    many = field(row, "images", list, optional=True)
    one = row.get("image")
    if many is not None and one is not None:
        raise Reject("wrong_type", "both 'images' and 'image' given")
    return many if many is not None else [] if one is None else [one]


def _prompt(value: Any) -> list[dict[str, Any]]:
    """The prompt turns: a string is one user turn; a list must not end with the assistant."""
    if not isinstance(value, list):
        return [user_turn(as_text(value, "prompt").strip())]
    turns = _turns(value, "prompt")
    if not turns:
        raise Reject("missing_field", "empty 'prompt'")
    if turns[-1]["role"] == "assistant":
        raise Reject("wrong_type", "'prompt' ends with an assistant turn: nothing to answer")
    return turns


def _turns(value: list[Any], name: str) -> list[dict[str, Any]]:
    """Chat messages with their content as a list of text/image parts."""
    turns = []
    for i, m in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise Reject("wrong_type", f"{where} is not a message with a role in {list(ROLES)}")
        content = field(m, "content", (str, bytes, list))
        parts = ([_text_part(content, f"{where}.content")] if not isinstance(content, list)
                 else [_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)])
        turns.append({"role": m["role"], "content": parts})
    return turns


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "image":
        return {"type": "image"}  # the image itself is in `images` (parquet adds text: null)
    if kind == "text":
        return _text_part(part.get("text"), f"{where}.text")
    raise Reject("wrong_type", f"{where} is not a {{'type': 'text'|'image'}} part")


def _text_part(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        raise Reject("missing_field", f"no text in {where}")
    return {"type": "text", "text": as_text(value, where)}


def _with_images(prompt: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` image parts at the start of the first user turn (TRL's placement)."""
    first = next((i for i, m in enumerate(prompt) if m["role"] == "user"), None)
    if first is None:
        raise Reject("placeholder_mismatch", f"{n} image(s) and no user turn to hold them")
    out = list(prompt)
    out[first] = {**prompt[first], "content": [{"type": "image"}] * n + prompt[first]["content"]}
    return out


def _implicit_prompt(chosen: Any, rejected: Any) -> tuple[list[dict[str, Any]], Any, Any]:
    """Split two whole conversations into their shared leading turns and the two answers."""
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise Reject("missing_field", "no 'prompt' (and chosen/rejected are not conversations "
                                      "with a shared prompt)")
    shared = 0
    while (shared < min(len(chosen), len(rejected)) - 1
           and chosen[shared] == rejected[shared]):
        shared += 1
    if shared == 0:
        raise Reject("missing_field", "no 'prompt' and no leading turns shared by chosen and "
                                      "rejected")
    return _prompt(chosen[:shared]), chosen[shared:], rejected[shared:]


def _answer(value: Any, name: str) -> str:
    """An answer's text: a string, or exactly one assistant turn of text parts."""
    if not isinstance(value, list):
        return as_text(value, name).strip()
    turns = _turns(value, name)
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        roles = [t["role"] for t in turns]
        raise Reject("wrong_type", f"{name!r} must be one assistant turn, got roles {roles}")
    if image_placeholders(turns):
        raise Reject("wrong_type", f"{name!r} holds an image part; answers are text")
    return "".join(p["text"] for p in turns[0]["content"]).strip()
