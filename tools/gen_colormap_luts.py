"""Regenerate ``onnxcam/render/_luts.py`` from matplotlib (offline, dev only).

matplotlib is never imported by onnxcam at run time: this script was run once
and its output is committed as plain data. Each LUT is matplotlib's 256-entry
table (``colormaps[name](np.arange(256))``) with every channel rounded to the
nearest 8-bit value, so viridis(0) = #440154 and viridis(1) = #fde725, the
published endpoints.

    python tools/gen_colormap_luts.py > onnxcam/render/_luts.py
"""

from __future__ import annotations

import matplotlib
import numpy as np

NAMES = ("viridis", "cividis", "turbo", "jet")
SOURCES = {
    "viridis": "matplotlib 'viridis' (van der Walt & Smith; perceptually uniform, colour-blind safe)",
    "cividis": "matplotlib 'cividis' (Nunez, Anderton & Renslow 2018; optimised for colour-vision deficiency)",
    "turbo": "matplotlib 'turbo' = Google's published 256-entry turbo sRGB table (Mikhailov 2019, Apache-2.0)",
    "jet": "matplotlib 'jet' (piecewise-linear segment data); OpenCV's COLORMAP_JET approximates the same ramp",
}


def main() -> None:
    print('"""256-entry colormap lookup tables, generated ONCE offline by tools/gen_colormap_luts.py.')
    print()
    print(f"Source: matplotlib {matplotlib.__version__}; each entry is round(255 * rgb) as 6 hex digits.")
    print("Do not edit by hand; matplotlib is not a run-time dependency of onnxcam.")
    print('"""')
    print()
    print("LUT_HEX = {")
    for name in NAMES:
        rgb = matplotlib.colormaps[name](np.arange(256))[:, :3]
        u8 = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
        hexes = u8.tobytes().hex()
        print(f"    # {SOURCES[name]}")
        print(f"    {name!r}: (")
        for i in range(0, len(hexes), 96):  # 16 colours per line
            print(f'        "{hexes[i : i + 96]}"')
        print("    ),")
    print("}")


if __name__ == "__main__":
    main()
