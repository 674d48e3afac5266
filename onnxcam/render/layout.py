"""Page layout for panels: fonts, wrapped text, the colour bar, and the tile grid."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from onnxcam.render.colormaps import colormap_lut

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
GAP = 8  # between tiles
MARGIN = 10  # around the page
BAR_HEIGHT = 14
TILE_BOXES_KEY = "onnxcam_tiles"


@functools.lru_cache(maxsize=16)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at ``size`` px (a bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def font_size_for(tile: int) -> int:
    return int(np.clip(round(tile / 22), 14, 18))


def text_width(text: str, fnt) -> float:
    return fnt.getlength(text)


def line_height(fnt) -> int:
    top, bottom = fnt.getbbox("Ag|/_(")[1::2]
    return int(bottom - min(top, 0)) + 4


def _split_long(word: str, fnt, max_width: float) -> list[str]:
    """Break one over-long word, preferring to cut after '/', '_', '.', '-' or ':'."""
    pieces = [p for p in re.split(r"(?<=[/_.:\-])", word) if p]
    lines: list[str] = []
    cur = ""
    for piece in pieces:
        if cur and text_width(cur + piece, fnt) > max_width:
            lines.append(cur)
            cur = ""
        while text_width(piece, fnt) > max_width and len(piece) > 1:  # hard cut by characters
            k = len(piece)
            while k > 1 and text_width(piece[:k], fnt) > max_width:
                k -= 1
            lines.append(piece[:k])
            piece = piece[k:]
        cur += piece
    if cur:
        lines.append(cur)
    return lines


def wrap(text: str, fnt, max_width: float) -> list[str]:
    """Greedy word wrap to ``max_width`` px; keeps explicit newlines."""
    out: list[str] = []
    for para in str(text).split("\n"):
        cur = ""
        for word in para.split():
            cand = f"{cur} {word}" if cur else word
            if text_width(cand, fnt) <= max_width:
                cur = cand
                continue
            if cur:
                out.append(cur)
            if text_width(word, fnt) <= max_width:
                cur = word
            else:
                *full, cur = _split_long(word, fnt, max_width)
                out.extend(full)
        out.append(cur)
    return out


def text_block(text: str, width: int, size: int, align: str = "center") -> Image.Image:
    """A white strip ``width`` px wide holding ``text`` wrapped to fit."""
    fnt = font(size)
    lines = wrap(text, fnt, max(width - 4, 8))
    lh = line_height(fnt)
    img = Image.new("RGB", (width, lh * len(lines) + 2), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        w = text_width(line, fnt)
        x = (width - w) / 2 if align == "center" else 2
        draw.text((x, 1 + i * lh), line, fill=TEXT, font=fnt)
    return img


def colorbar(colormap: str, width: int, size: int, label: str = "relative importance") -> Image.Image:
    """Horizontal legend: the colormap from 0 (left) to 1 (right), labelled underneath."""
    lut = colormap_lut(colormap)
    inner = max(width - 2, 1)  # a 1-px frame around the ramp, so both end colours show
    idx = np.rint(np.linspace(0, 255, inner)).astype(int)
    bar = np.repeat(lut[idx][None, :, :], BAR_HEIGHT - 2, axis=0)
    fnt = font(size)
    lh = line_height(fnt)
    img = Image.new("RGB", (width, BAR_HEIGHT + 2 + lh), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width - 1, BAR_HEIGHT - 1), outline=TEXT, width=1)
    img.paste(Image.fromarray(np.ascontiguousarray(bar)), (1, 1))
    y = BAR_HEIGHT + 1
    draw.text((0, y), "0", fill=TEXT, font=fnt)
    draw.text((width - text_width("1", fnt), y), "1", fill=TEXT, font=fnt)
    if label and text_width(label, fnt) + 4 * text_width("0", fnt) < width:
        draw.text(((width - text_width(label, fnt)) / 2, y), label, fill=TEXT, font=fnt)
    return img


def fit_size(width: int, height: int, tile_size: int, min_tile: int = 192) -> tuple[int, int]:
    """(w, h) scaled so the long side is at most ``tile_size`` (and small images grow to ``min_tile``)."""
    long_side = max(width, height)
    target = long_side
    if long_side > tile_size:
        target = tile_size
    elif long_side < min(min_tile, tile_size):
        target = min(min_tile, tile_size)
    if target == long_side:
        return width, height
    s = target / long_side
    return max(1, round(width * s)), max(1, round(height * s))


def compose(
    tiles: list[Image.Image],
    labels: Sequence[str | None],
    *,
    caption: str | None = None,
    colormap: str | None = None,
    columns: int | None = None,
    size: int = 16,
) -> Image.Image:
    """Tiles in a grid (row-major, ``columns`` per row; default all in one row), each with its
    label underneath, a caption strip on top and an optional colour bar at the bottom.

    The returned image's ``info[TILE_BOXES_KEY]`` lists each tile's (x0, y0, x1, y1)
    (exclusive ends) on the page, in the order given.
    """
    n = len(tiles)
    cols = n if not columns else max(1, min(int(columns), n))
    rows = -(-n // cols)
    tw = max(t.width for t in tiles)
    th = max(t.height for t in tiles)
    label_imgs = [text_block(lab, tw, size) if lab else None for lab in labels]
    row_label_h = [
        max([li.height for li in label_imgs[r * cols : (r + 1) * cols] if li is not None] or [0]) for r in range(rows)
    ]
    grid_w = cols * tw + (cols - 1) * GAP
    cap = text_block(caption, grid_w, size + 2) if caption else None
    bar = colorbar(colormap, min(grid_w, max(tw, 256)), size - 2) if colormap else None
    height = MARGIN * 2 + sum(th + lh for lh in row_label_h) + GAP * (rows - 1)
    height += (cap.height + GAP) if cap else 0
    height += (bar.height + GAP) if bar else 0
    page = Image.new("RGB", (grid_w + 2 * MARGIN, height), BACKGROUND)
    boxes: list[tuple[int, int, int, int]] = []
    y = MARGIN
    if cap:
        page.paste(cap, (MARGIN, y))
        y += cap.height + GAP
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            if i >= n:
                break
            x = MARGIN + c * (tw + GAP)
            t = tiles[i]
            tx, ty = x + (tw - t.width) // 2, y + (th - t.height) // 2
            page.paste(t, (tx, ty))
            boxes.append((tx, ty, tx + t.width, ty + t.height))
            label_img = label_imgs[i]
            if label_img is not None:
                page.paste(label_img, (x, y + th))
        y += th + row_label_h[r] + GAP
    if bar:
        page.paste(bar, (MARGIN + (grid_w - bar.width) // 2, y))
    page.info[TILE_BOXES_KEY] = boxes
    return page
