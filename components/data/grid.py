"""Example grids: a few samples of one source drawn as images with their question and answer."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from components.data.sample import Sample, message_text
from components.data.synthetic.drawing import ui_font, wrap

CELL_W, THUMB_H, TEXT_LINES, PAD = 320, 150, 7, 8


def _texts(sample: Sample) -> list[str]:
    """'Q: ...' / 'A: ...' lines of the first exchange (chosen / rejected for preferences)."""
    record = sample.record
    messages = record["messages"]
    parts = [p["text"].strip() for p in messages[0]["content"] if p.get("type") == "text"]
    parts = [p for p in parts if p]
    out = [f"doc: {' '.join(parts[:-1])[:90]}..."] if len(parts) > 1 else []
    out.append(f"Q: {parts[-1] if parts else message_text(messages[0]).strip()}")
    if "chosen" in record:
        out += [f"chosen: {record['chosen']}", f"rejected: {record['rejected']}"]
    elif len(messages) > 1:
        out.append(f"A: {message_text(messages[1])}")
    return out


def _thumbs(images: list[Image.Image]) -> Image.Image:
    """Images side by side, scaled (nearest for small ones) to fit CELL_W x THUMB_H."""
    strip = Image.new("RGB", (CELL_W - 2 * PAD, THUMB_H), (255, 255, 255))
    if not images:
        return strip
    slot = (CELL_W - 2 * PAD) // len(images)
    for i, im in enumerate(images):
        scale = min((slot - 4) / im.width, THUMB_H / im.height)
        size = (max(1, int(im.width * scale)), max(1, int(im.height * scale)))
        method = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
        strip.paste(im.convert("RGB").resize(size, method), (i * slot, 0))
    return strip


def sample_cell(sample: Sample) -> Image.Image:
    """One sample: its images on top, then its wrapped question and answer."""
    font = ui_font(12)
    lines: list[str] = []
    for text in _texts(sample):
        for part in text.split("\n"):
            lines += wrap(part, font, CELL_W - 2 * PAD) or [""]
    if len(lines) > TEXT_LINES:
        lines = lines[: TEXT_LINES - 1] + ["..."]
    cell = Image.new("RGB", (CELL_W, THUMB_H + 2 * PAD + 15 * TEXT_LINES + PAD), (255, 255, 255))
    cell.paste(_thumbs(sample.images), (PAD, PAD))
    draw = ImageDraw.Draw(cell)
    for i, line in enumerate(lines):
        draw.text((PAD, THUMB_H + 2 * PAD + 15 * i), line, font=font, fill=(20, 20, 20))
    draw.rectangle((0, 0, CELL_W - 1, cell.height - 1), outline=(190, 190, 190))
    return cell


def example_grid(source: str, n: int = 6, seed: int = 0, image_size: int = 64,
                 columns: int = 3) -> Image.Image:
    """``n`` training samples of ``source`` in a grid with a title bar."""
    from components.data.corpus import generate_sample

    cells = [sample_cell(generate_sample(source, seed, "train", i, image_size))
             for i in range(n)]
    rows = (n + columns - 1) // columns
    title_h = 28
    grid = Image.new("RGB", (CELL_W * columns, title_h + cells[0].height * rows), (245, 245, 245))
    ImageDraw.Draw(grid).text((PAD, 6), f"{source}  (seed {seed}, image_size {image_size})",
                              font=ui_font(15), fill=(0, 0, 0))
    for i, cell in enumerate(cells):
        grid.paste(cell, ((i % columns) * CELL_W, title_h + (i // columns) * cell.height))
    return grid


def write_grids(out_dir: str | Path, sources: list[str], n: int = 6, seed: int = 0,
                image_size: int = 64) -> list[str]:
    """``out_dir/<source>.png`` per source; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sources:
        path = out / f"{source}.png"
        example_grid(source, n, seed, image_size).save(path, optimize=True)
        paths.append(str(path))
    return paths
