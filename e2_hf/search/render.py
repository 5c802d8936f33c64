"""Search results as an image grid (PNG) or a self-contained HTML page (thumbnails inlined)."""

from __future__ import annotations

import base64
import html
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from ..visualization import load_font
from .index import EmbeddingIndex
from .query import SearchHit

GRID_COLUMNS = 5
CELL_IMAGE_SIDE = 160
CAPTION_LINES = 4
LINE_HEIGHT = 15
MARGIN = 10


def target_name(entity: str | None) -> str:
    return "whole image (global embedding)" if entity is None else f"{entity} region (regional embedding)"


def render_grid(hits: Sequence[SearchHit], index: EmbeddingIndex, query: str, entity: str | None) -> Image.Image:
    """Thumbnails in rank order, `GRID_COLUMNS` per row, each with rank, score, id and text."""
    columns = max(1, min(GRID_COLUMNS, len(hits)))
    rows = max(1, -(-len(hits) // columns))
    cell_width = CELL_IMAGE_SIDE + MARGIN
    cell_height = CELL_IMAGE_SIDE + CAPTION_LINES * LINE_HEIGHT + MARGIN
    header = 2 * LINE_HEIGHT + MARGIN
    sheet = Image.new("RGB", (MARGIN + columns * cell_width, header + rows * cell_height + MARGIN), "white")
    draw = ImageDraw.Draw(sheet)
    font, small = load_font(14), load_font(11)
    draw.text((MARGIN, MARGIN // 2), f'"{query}" - {target_name(entity)}', fill="black", font=font)
    if not hits:
        draw.text((MARGIN, header), "no results", fill="black", font=font)
    for position, hit in enumerate(hits):
        x = MARGIN + (position % columns) * cell_width
        y = header + (position // columns) * cell_height
        thumbnail = Image.fromarray(index.thumbnail(hit.row)).resize((CELL_IMAGE_SIDE,) * 2, Image.BICUBIC)
        sheet.paste(thumbnail, (x, y))
        caption = [f"#{hit.rank}  score {hit.score:.3f}  id {hit.item.product_id}"]
        caption += textwrap.wrap(hit.item.description, width=28)[: CAPTION_LINES - 1]
        for line_number, line in enumerate(caption):
            draw.text((x, y + CELL_IMAGE_SIDE + 2 + line_number * LINE_HEIGHT), line, fill="black", font=small)
    return sheet


def _data_uri(thumbnail) -> str:
    buffer = io.BytesIO()
    Image.fromarray(thumbnail).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.target { margin: 0 0 16px; color: #555; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 16px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px; }
.card img { width: 100%; aspect-ratio: 1; object-fit: contain; background: #fff; }
.rank { font-weight: 600; }
.score { color: #555; float: right; }
.description { font-size: 13px; margin: 6px 0; }
table.tags { font-size: 12px; border-collapse: collapse; }
table.tags th { text-align: left; padding-right: 8px; color: #555; font-weight: normal; }
"""


def render_html(hits: Sequence[SearchHit], index: EmbeddingIndex, query: str, entity: str | None) -> str:
    """One HTML file with everything inlined (no network, no external files, no scripts)."""
    cards = []
    for hit in hits:
        tags = "".join(
            f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
            for name, value in hit.item.tags.items()
            if value
        )
        cards.append(
            f'<div class="card" data-row="{hit.row}" data-product-id="{html.escape(hit.item.product_id)}">'
            f'<img src="{_data_uri(index.thumbnail(hit.row))}" alt="product {html.escape(hit.item.product_id)}">'
            f'<div><span class="rank">#{hit.rank}</span><span class="score">{hit.score:.3f}</span></div>'
            f'<div class="description">{html.escape(hit.item.description)}</div>'
            f'<table class="tags">{tags}</table></div>'
        )
    body = "\n".join(cards) if cards else "<p>No results.</p>"
    title = html.escape(f"E2 search: {query}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{PAGE_STYLE}</style></head><body>\n"
        f'<h1>{html.escape(query)}</h1><p class="target">matched against: {html.escape(target_name(entity))}; '
        f'{len(index)} indexed products</p>\n<div class="grid">\n{body}\n</div></body></html>\n'
    )


def results_format(path: str | Path) -> str:
    """ "png" or "html" from the file name; anything else is an error."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise ValueError(f"--output must end in .png or .html, got {path}")
    return "png" if suffix == ".png" else "html"


def write_results(path: str | Path, hits: Sequence[SearchHit], index: EmbeddingIndex, query: str,
                  entity: str | None) -> None:  # fmt: skip
    """`.png` -> image grid, `.html` / `.htm` -> page."""
    path = Path(path)
    output_format = results_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if output_format == "png":
        render_grid(hits, index, query, entity).save(path)
    else:
        path.write_text(render_html(hits, index, query, entity), encoding="utf-8")
