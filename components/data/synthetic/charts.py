"""Charts: matplotlib bar, line and pie charts with their values labelled, and value questions.

Rendered with the Agg canvas straight to an RGBA buffer (no PNG round trip), one small
figure per sample, so a chart costs a few tens of milliseconds.
"""

from __future__ import annotations

import functools
import random
from typing import Any

from PIL import Image

from components.data.sample import Sample, assistant_turn, user_turn
from components.data.synthetic.rng import sample_key, sample_rng
from components.data.synthetic.words import WORDS

SOURCE = "charts"
KINDS = ("bar", "line", "pie")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
DPI = 80
FONT_PT = 7
LABELS = tuple(w for w in WORDS if len(w) <= 5)
AXES_BOX = (0.04, 0.12, 0.92, 0.76)  # left, bottom, width, height of bar and line axes


def chart_side(image_size: int) -> int:
    """Square chart side in pixels: twice the recipe image size, at least 160."""
    return min(1024, max(160, 2 * image_size))


def sample_chart(rng: random.Random) -> dict[str, Any]:
    """Kind, title, labels and integer values of one chart."""
    kind = rng.choice(KINDS)
    what = rng.choice(LABELS).title()
    if kind == "bar":
        labels = rng.sample(LABELS, rng.randint(3, 6))
        values = [rng.randint(1, 50) for _ in labels]
        title = f"{what} by group"
    elif kind == "line":
        start = rng.randint(2000, 2020)
        labels = [str(start + i) for i in range(rng.randint(4, 7))]
        values = [rng.randint(0, 99) for _ in labels]
        title = f"{what} per year"
    else:
        labels = rng.sample(LABELS, rng.randint(3, 5))
        cuts = sorted(rng.sample(range(1, 20), len(labels) - 1))
        values = [5 * (b - a) for a, b in zip([0, *cuts], [*cuts, 20], strict=True)]
        title = f"Share of {what.lower()}"
    colours = rng.sample(PALETTE, len(labels) if kind == "pie" else 1)
    return {"kind": kind, "title": title, "labels": labels, "values": values, "colours": colours}


@functools.cache
def _canvas(kind: str, side: int) -> tuple[Any, Any, Any]:
    """A (figure, canvas, axes) reused per process and chart kind: axes construction is the
    largest fixed cost of a matplotlib chart. Every sample sets limits explicitly and
    removes its artists after drawing, so a reused figure renders like a fresh one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(side / DPI, side / DPI), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    # fixed axes box, axis machinery off (no ticks): labels are plain texts, values labelled
    ax = fig.add_axes(AXES_BOX if kind != "pie" else (0, 0, 1, 0.88))
    ax.set_axis_off()
    return fig, canvas, ax


def render(chart: dict[str, Any], side: int) -> Image.Image:
    """The chart as an RGB image of ``side`` x ``side`` pixels."""
    fig, canvas, ax = _canvas(chart["kind"], side)
    labels, values, colours = chart["labels"], chart["values"], chart["colours"]
    xs = range(len(labels))
    texts = [fig.text(0.5, 0.97, chart["title"], ha="center", va="top", fontsize=FONT_PT + 1)]
    if chart["kind"] == "pie":
        ax.pie(values, labels=labels, colors=colours, autopct=lambda p: f"{round(p)}%",
               startangle=90, textprops={"fontsize": FONT_PT}, radius=0.8)
    else:
        top = max(values) * 1.2 if chart["kind"] == "bar" else 115
        lo, hi = -0.6, len(labels) - 0.4
        ax.set_xlim(lo, hi)
        ax.set_ylim(0, top)
        if chart["kind"] == "bar":
            ax.bar(xs, values, color=colours[0], width=0.7)
        else:
            ax.plot(xs, values, marker="o", color=colours[0])
        # labels as figure texts placed by hand: cheaper than axes texts (no clip paths)
        left, bottom, width, height = AXES_BOX
        for x, y, label in zip(xs, values, labels, strict=True):
            fx = left + width * (x - lo) / (hi - lo)
            fy = bottom + height * y / top
            gap = 0.01 if chart["kind"] == "bar" else 0.025
            texts.append(fig.text(fx, fy + gap, str(y), ha="center", va="bottom",
                                  fontsize=FONT_PT))
            texts.append(fig.text(fx, bottom - 0.01, label, ha="center", va="top",
                                  fontsize=FONT_PT - 1))
    try:
        canvas.draw()
        rgba = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba())
        return rgba.convert("RGB")
    finally:
        for artist in [*ax.patches, *ax.lines, *ax.texts, *ax.collections, *texts]:
            artist.remove()


def ask(chart: dict[str, Any], rng: random.Random) -> tuple[str, str, str]:
    """(qtype, question, answer) about the chart's values."""
    kind, labels, values = chart["kind"], chart["labels"], chart["values"]
    i = rng.randrange(len(labels))
    top = labels[values.index(max(values))]
    unique_top = values.count(max(values)) == 1
    u = rng.random()
    if kind == "pie":
        if u < 0.6 or not unique_top:
            return "value", f"What percentage is {labels[i]}?", f"{values[i]}%"
        return "largest", "Which slice is the largest?", top
    if kind == "line":
        if u < 0.5 or not unique_top:
            return "value", f"What is the value in {labels[i]}?", str(values[i])
        if u < 0.75:
            return "largest", "In which year is the value highest?", top
        j = rng.choice([k for k in range(len(labels)) if k != i])
        a, b = sorted((i, j))
        trend = "up" if values[b] > values[a] else "down" if values[b] < values[a] else "same"
        if trend == "same":
            return "value", f"What is the value in {labels[i]}?", str(values[i])
        return "trend", f"Did the value go up or down from {labels[a]} to {labels[b]}?", trend
    if u < 0.5 or not unique_top:
        return "value", f"What is the value of {labels[i]}?", str(values[i])
    if u < 0.8:
        return "largest", "Which bar is the highest?", top
    return "count", "How many bars are there?", str(len(labels))


def generate(seed: int, index: int, split: str, image_size: int = 64) -> Sample:
    """One chart and one value question."""
    rng = sample_rng(seed, split, SOURCE, index)
    chart = sample_chart(rng)
    image = render(chart, chart_side(image_size))
    qtype, q, a = ask(chart, rng)
    record = {"task": "chart", "source": SOURCE, "kind": chart["kind"], "qtype": qtype,
              "messages": [user_turn(q, 1), assistant_turn(a)], "answers": [a],
              "labels": chart["labels"], "values": chart["values"]}
    return Sample(sample_key(SOURCE, split, index), [image], record)
