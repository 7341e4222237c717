"""Documents: one-page PDFs (fpdf2) with a title, headed sections and paragraphs, rendered to
images at high resolution with pdfium (pypdfium2) - the reading data that needs resolution.

Questions: "what is written under the heading X", the title, the list of headings, and a
full transcription (title, then each heading followed by its paragraph, one per line).
"""

from __future__ import annotations

import random
from typing import Any

from PIL import Image

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic.drawing import sentence
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.words import WORDS

SOURCE = "documents"
HEADINGS = ("Introduction", "Background", "Methods", "Results", "Summary", "Notes",
            "Schedule", "Budget", "Contact", "History", "Overview", "Details", "Risks",
            "Next Steps", "Materials", "Outcome")
FONTS = ("helvetica", "times", "courier")  # the PDF core fonts: no font files embedded
PAGE_MM = (148.0, 210.0)  # A5 portrait
QTYPES = ("heading", "title", "headings", "transcribe")
SCALE = 6  # page width = SCALE x image_size pixels (at least MIN_WIDTH)
MIN_WIDTH, MAX_WIDTH = 384, 2048
_WIDTHS: dict[tuple[str, str, float], dict[str, float]] = {}  # word widths per font (mm)


def page_width(image_size: int) -> int:
    """Rendered page width in pixels for a recipe image size."""
    return min(MAX_WIDTH, max(MIN_WIDTH, SCALE * image_size))


def sample_content(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    """A title and 2-5 (heading, paragraph) sections with distinct headings."""
    a, b = rng.sample(WORDS, 2)
    title = rng.choice((f"The {a.title()} {b.title()} Report", f"{a.title()} and {b.title()}",
                        f"Notes on {a.title()}", f"{a.title()} {b.title()} Plan"))
    sections = [(h, " ".join(sentence(rng, WORDS, 6, 12) for _ in range(rng.randint(1, 4))))
                for h in rng.sample(HEADINGS, rng.randint(2, 5))]
    return title, sections


def _wrap(pdf, text: str, width: float, cache: dict[str, float]) -> list[str]:
    """Greedy word wrap with cached word widths (fpdf's own line breaker measures every
    character in Python: two thirds of a page's cost)."""
    space = pdf.get_string_width(" ")
    lines: list[str] = []
    line: list[str] = []
    used = 0.0
    for word in text.split():
        w = cache.get(word)
        if w is None:
            w = cache[word] = pdf.get_string_width(word)
        if line and used + space + w > width:
            lines.append(" ".join(line))
            line, used = [], 0.0
        used += (space if line else 0.0) + w
        line.append(word)
    if line:
        lines.append(" ".join(line))
    return lines


def build_pdf(title: str, sections: list[tuple[str, str]], font: str, body_pt: float) -> bytes:
    """A one-page A5 PDF; raises ValueError when the content does not fit one page."""
    from fpdf import FPDF

    pdf = FPDF(format=PAGE_MM)
    margin = 14
    pdf.set_margins(margin, margin, margin)
    pdf.set_auto_page_break(False)
    pdf.add_page()
    width = PAGE_MM[0] - 2 * margin
    blocks = [("B", body_pt + 6, title, 0.0)]
    for heading, text in sections:
        blocks += [("B", body_pt + 2, heading, body_pt * 0.3), ("", body_pt, text, 0.0)]
    for style, size, text, gap in blocks:
        pdf.ln(gap)
        pdf.set_font(font, style, size)
        cache = _WIDTHS.setdefault((font, style, size), {})
        for line in _wrap(pdf, text, width, cache):
            if pdf.get_y() + size * 0.5 > PAGE_MM[1] - margin:
                raise ValueError("document does not fit one page")
            pdf.cell(0, size * 0.5, line, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def render_pdf(data: bytes, width: int) -> Image.Image:
    """Page 1 of a PDF rendered by pdfium at ``width`` pixels, RGB."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(data)
    try:
        page = doc[0]
        bitmap = page.render(scale=width / page.get_width(), grayscale=True)
        image = bitmap.to_pil().convert("RGB")
        page.close()
    finally:
        doc.close()
    return image


def ask(qtype: str, title: str, sections: list[tuple[str, str]],
        rng: random.Random) -> tuple[str, str]:
    if qtype == "heading":
        heading, text = rng.choice(sections)
        return f'What is written under the heading "{heading}"?', text
    if qtype == "title":
        return "What is the title of the document?", title
    if qtype == "headings":
        return "List the headings of the document.", ", ".join(h for h, _ in sections)
    if qtype == "transcribe":
        lines = [title] + [line for section in sections for line in section]
        return "Transcribe the text of the document.", "\n".join(lines)
    raise ValueError(f"unknown document question type {qtype!r}; expected one of {QTYPES}")


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """A rendered page and 1-3 questions about it (test: one question, type by index)."""
    rng = sample_rng(seed, split, SOURCE, index)
    font, body_pt = rng.choice(FONTS), rng.choice((9.0, 10.0, 11.0))
    title, sections = sample_content(rng)
    while True:
        try:
            data = build_pdf(title, sections, font, body_pt)
            break
        except ValueError:
            sections = sections[:-1]  # two sections of <= 48 words always fit
    image = render_pdf(data, page_width(image_size))
    qtypes = [QTYPES[index % len(QTYPES)]] if split == "test" else rng.sample(
        QTYPES, rng.randint(1, 3))
    messages: list[dict[str, Any]] = []
    for qtype in qtypes:
        question, answer = ask(qtype, title, sections, rng)
        messages += [user_turn(question, 0 if messages else 1), assistant_turn(answer)]
    record = {"task": "document", "source": SOURCE, "messages": messages, "answers": [answer],
              "qtypes": qtypes, "font": font, "body_pt": body_pt, "title": title,
              "headings": [h for h, _ in sections]}
    return Sample(sample_key(SOURCE, split, index), [image], record)
