"""Tables: rendered grids (name column + numeric columns) with cell, maximum, row-count and
table-to-markdown questions."""

from __future__ import annotations

import random
from typing import Any

from PIL import Image, ImageDraw

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic.drawing import text_size, ui_font
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.words import WORDS

SOURCE = "tables"
COLUMNS = ("Price", "Count", "Score", "Age", "Weight", "Stock", "Rank", "Total", "Size")
QTYPES = ("cell", "max", "rows", "markdown")
STYLES = ("grid", "rows", "zebra")
HEADER_FILLS = ((220, 220, 220), (200, 220, 245), (230, 245, 220), (250, 230, 200))


def sample_table(rng: random.Random) -> tuple[list[str], list[list[str]]]:
    """Header and rows: a Name column then 2-4 integer columns, 2-6 rows with unique names."""
    header = ["Name", *rng.sample(COLUMNS, rng.randint(2, 4))]
    names = [w.title() for w in rng.sample(WORDS, rng.randint(2, 6))]
    rows = [[name] + [str(rng.randint(0, 999)) for _ in header[1:]] for name in names]
    return header, rows


def render(header: list[str], rows: list[list[str]], rng: random.Random,
           image_size: int) -> Image.Image:
    """The table drawn with one of three styles in a random font family."""
    font = ui_font(max(10, image_size // 5), rng.choice(("sans", "serif", "mono")))
    pad = max(3, font.size // 3)
    table = [header, *rows]
    widths = [max(text_size(font, r[c])[0] for r in table) + 2 * pad for c in range(len(header))]
    row_h = font.size + 2 * pad
    w, h = sum(widths) + 1, row_h * len(table) + 1
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    style = rng.choice(STYLES)
    draw.rectangle((0, 0, w - 1, row_h), fill=rng.choice(HEADER_FILLS))
    line = (90, 90, 90)
    for r, cells in enumerate(table):
        y = r * row_h
        if style == "zebra" and r and r % 2 == 0:
            draw.rectangle((0, y, w - 1, y + row_h), fill=(240, 240, 240))
        if style != "zebra" or r <= 1:
            draw.line((0, y, w - 1, y), fill=line)
        x = 0
        for c, text in enumerate(cells):
            tw = text_size(font, text)[0]
            tx = x + pad if c == 0 else x + widths[c] - pad - tw  # numbers right-aligned
            draw.text((tx, y + pad), text, font=font, fill=(0, 0, 0))
            x += widths[c]
    draw.line((0, h - 1, w - 1, h - 1), fill=line)
    if style == "grid":
        x = 0
        for width in [0, *widths]:
            x += width
            draw.line((min(x, w - 1), 0, min(x, w - 1), h - 1), fill=line)
    return image


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """The table as GitHub markdown."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def ask(qtype: str, header: list[str], rows: list[list[str]],
        rng: random.Random) -> tuple[str, str]:
    if qtype == "max":
        c = rng.randrange(1, len(header))
        values = [int(r[c]) for r in rows]
        if values.count(max(values)) == 1:
            return f"Which name has the highest {header[c]}?", rows[values.index(max(values))][0]
        qtype = "cell"
    if qtype == "cell":
        row, c = rng.choice(rows), rng.randrange(1, len(header))
        return f"What is the {header[c]} of {row[0]}?", row[c]
    if qtype == "rows":
        return "How many rows does the table have, not counting the header?", str(len(rows))
    return "Convert the table to markdown.", markdown(header, rows)


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """A rendered table and 1-2 questions about it (test: one, type by index)."""
    rng = sample_rng(seed, split, SOURCE, index)
    header, rows = sample_table(rng)
    image = render(header, rows, rng, image_size)
    n = 1 if split == "test" else rng.randint(1, 2)
    qtypes = [QTYPES[index % len(QTYPES)]] if split == "test" else rng.sample(QTYPES, n)
    messages: list[dict[str, Any]] = []
    for qtype in qtypes:
        question, answer = ask(qtype, header, rows, rng)
        messages += [user_turn(question, 0 if messages else 1), assistant_turn(answer)]
    record = {"task": "table", "source": SOURCE, "messages": messages, "answers": [answer],
              "qtypes": qtypes, "header": header, "rows": rows}
    return Sample(sample_key(SOURCE, split, index), [image], record)
