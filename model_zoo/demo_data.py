"""Synthetic "shapes in clutter" images for onnxcam's embedded demo model.

Each image holds exactly one object of one of six classes (circle, square,
triangle, star, cross, ring) in a random colour, size, rotation and position,
on a cluttered, textured background: a random base colour, Gaussian pixel
noise, stripes at a random angle, smooth low-frequency colour blotches, and
distractor strokes (straight lines and jagged polylines, one to three pixels
wide, in colours far from the object's) plus a few 1-2 px speckles. Distractors
are open strokes, never closed or filled shapes, so none is a copy of a class
object. Most lie under the object; with ``occlude=True`` (the default) up to two
1 px lines are drawn over it as light partial occlusion.

The ground-truth box ``(x0, y0, x1, y1)`` is the tight box of the object's own
pixel mask, in pixels, inclusive of ``x0, y0`` and exclusive of ``x1, y1`` (so
``x0 <= x < x1`` covers the object's columns).

Only numpy and Pillow are used. ``generate(n, seed)`` is deterministic: the same
``(n, seed)`` gives the same bytes, and image ``i`` depends only on
``(seed, i)``, so ``generate(10, s)[0][:5] == generate(5, s)[0]``. Held-out sets
come from seeds the training script never uses (see ``model_zoo/train_demo.py``).

    python -m model_zoo.demo_data OUT_DIR [--n 12] [--seed 7]   # write PNGs to look at
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
SIZE = 96  # images are SIZE x SIZE RGB
MIN_OBJ, MAX_OBJ = 22, 42  # object diameter (circumscribed), pixels
MARGIN = 2  # the object stays this far inside the border


def _colour(rng: np.random.Generator, avoid: list[np.ndarray] | None = None, min_dist: float = 110.0) -> np.ndarray:
    """A random RGB colour at least ``min_dist`` (Euclidean, 0..255 scale) from every colour in ``avoid``."""
    avoid = avoid or []
    best, best_d = None, -1.0
    for _ in range(40):
        c = rng.integers(0, 256, size=3).astype(np.float64)
        d = min((float(np.linalg.norm(c - a)) for a in avoid), default=1e9)
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Textured float background (size, size, 3) in 0..255, and its mean colour."""
    base = rng.integers(40, 216, size=3).astype(np.float64)
    img = np.broadcast_to(base, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # stripes at a random angle and period
    theta = rng.uniform(0, math.pi)
    period = rng.uniform(5, 16)
    phase = rng.uniform(0, 2 * math.pi)
    stripe = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period + phase)
    stripe_col = rng.uniform(-1, 1, size=3) * rng.uniform(15, 45)
    img += stripe[..., None] * stripe_col
    # smooth low-frequency blotches: a coarse random grid upsampled bilinearly
    g = int(rng.integers(3, 6))
    coarse = rng.normal(0, 1, size=(g, g, 3)).astype(np.float32)
    blot = np.stack(
        [np.asarray(Image.fromarray(coarse[..., k], mode="F").resize((size, size), Image.BILINEAR)) for k in range(3)],
        axis=-1,
    )
    img += blot * rng.uniform(10, 30)
    # pixel noise
    img += rng.normal(0, rng.uniform(4, 14), size=img.shape)
    return img, base


def _polygon_points(cls: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    """Outline of the polygon classes around (cx, cy) with circumscribed radius r."""
    if cls == "square":
        angles = [rot + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        radii = [r] * 4
    elif cls == "triangle":
        angles = [rot + k * 2 * math.pi / 3 for k in range(3)]
        radii = [r] * 3
    elif cls == "star":
        angles = [rot + k * math.pi / 5 for k in range(10)]
        radii = [r if k % 2 == 0 else r * 0.42 for k in range(10)]
    elif cls == "cross":  # a plus sign of arm half-width w, rotated
        w = r * 0.3
        pts = [
            (w, r),
            (w, w),
            (r, w),
            (r, -w),
            (w, -w),
            (w, -r),
            (-w, -r),
            (-w, -w),
            (-r, -w),
            (-r, w),
            (-w, w),
            (-w, r),
        ]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    else:
        raise ValueError(cls)
    return [(cx + rr * math.cos(a), cy + rr * math.sin(a)) for a, rr in zip(angles, radii)]


def _object_mask(cls: str, cx: float, cy: float, r: float, rot: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of one object, drawn at 4x and downsampled (anti-aliased coverage)."""
    s = 4
    m = Image.new("L", (size * s, size * s), 0)
    d = ImageDraw.Draw(m)
    if cls == "circle":
        d.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
    elif cls == "ring":
        d.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
        ri = r * 0.55
        d.ellipse([(cx - ri) * s, (cy - ri) * s, (cx + ri) * s, (cy + ri) * s], fill=0)
    else:
        d.polygon([(x * s, y * s) for x, y in _polygon_points(cls, cx, cy, r, rot)], fill=255)
    cover = np.asarray(m.resize((size, size), Image.BOX), dtype=np.float64) / 255.0
    return cover


def _distractors(rng: np.random.Generator, img: Image.Image, avoid: list[np.ndarray], count: int) -> None:
    """Open strokes (lines, jagged polylines) and speckles; never closed or filled shapes."""
    d = ImageDraw.Draw(img)
    size = img.size[0]
    for _ in range(count):
        col = tuple(int(v) for v in _colour(rng, avoid, 90.0))
        width = int(rng.integers(1, 4))
        kind = rng.random()
        if kind < 0.5:  # straight line, possibly across the whole image
            p = rng.uniform(-10, size + 10, size=4)
            d.line([(p[0], p[1]), (p[2], p[3])], fill=col, width=width)
        else:  # jagged open polyline (random walk), 3-6 segments
            k = int(rng.integers(3, 7))
            x, y = rng.uniform(0, size, size=2)
            pts = [(x, y)]
            for _ in range(k):
                a = rng.uniform(0, 2 * math.pi)
                step = rng.uniform(6, 20)
                x, y = x + step * math.cos(a), y + step * math.sin(a)
                pts.append((x, y))
            d.line(pts, fill=col, width=width, joint=None)
    for _ in range(int(rng.integers(5, 20))):  # speckles of 1-2 px
        col = tuple(int(v) for v in rng.integers(0, 256, size=3))
        x, y = rng.integers(0, size, size=2)
        w = int(rng.integers(1, 3))
        d.rectangle([x, y, x + w - 1, y + w - 1], fill=col)


def make_image(
    rng: np.random.Generator, cls_id: int, size: int = SIZE, occlude: bool = True
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One (size, size, 3) uint8 image with one object of class ``cls_id`` and its tight box."""
    cls = CLASSES[cls_id]
    bg, base = _background(rng, size)
    obj_col = _colour(rng, [base], 120.0)
    r = rng.uniform(MIN_OBJ, MAX_OBJ) / 2
    rot = rng.uniform(0, 2 * math.pi)
    lo, hi = r + MARGIN, size - r - MARGIN
    cx, cy = rng.uniform(lo, hi), rng.uniform(lo, hi)
    cover = _object_mask(cls, cx, cy, r, rot, size)
    avoid = [base, obj_col]
    n_dis = int(rng.integers(4, 10))
    n_front = int(rng.integers(0, 3)) if occlude else 0  # thin strokes that may cross the object
    under = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    _distractors(rng, under, avoid, n_dis - n_front)
    arr = np.asarray(under, dtype=np.float64)
    # object with slight shading so it is not a flat stamp
    shade = 1.0 + rng.normal(0, 0.04, size=(size, size, 1))
    obj = np.clip(obj_col * shade, 0, 255)
    arr = arr * (1 - cover[..., None]) + obj * cover[..., None]
    out = Image.fromarray(np.clip(arr + rng.normal(0, 3, size=arr.shape), 0, 255).astype(np.uint8))
    if n_front:
        # thin (1 px) strokes over the object: partial occlusion, never a closed shape
        d = ImageDraw.Draw(out)
        for _ in range(n_front):
            col = tuple(int(v) for v in _colour(rng, avoid, 90.0))
            p = rng.uniform(-10, size + 10, size=4)
            d.line([(p[0], p[1]), (p[2], p[3])], fill=col, width=1)
    ys, xs = np.nonzero(cover >= 0.5)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return np.asarray(out, dtype=np.uint8), box


def generate(n: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images: (uint8 (n, size, size, 3), int64 labels (n,), int64 boxes (n, 4) as x0, y0, x1, y1).

    Classes cycle through a seeded permutation so every class gets n/6 images
    (+-1). Image ``i`` is drawn from its own generator seeded by ``(seed, i)``.
    """
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    boxes = np.empty((n, 4), dtype=np.int64)
    k = len(CLASSES)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        # balanced: block b of k images is a permutation of the classes
        perm = np.random.default_rng([seed, i // k, 1_000_003]).permutation(k)
        labels[i] = perm[i % k]
        images[i], boxes[i] = make_image(rng, int(labels[i]), size)
    return images, labels, boxes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    imgs, labels, boxes = generate(args.n, args.seed)
    for i, (im, lab, b) in enumerate(zip(imgs, labels, boxes)):
        Image.fromarray(im).save(args.out / f"{i:03d}_{CLASSES[lab]}.png")
        print(i, CLASSES[lab], b.tolist())


if __name__ == "__main__":
    main()
