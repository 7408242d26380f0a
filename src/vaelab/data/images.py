"""Images made to fit a dataset: to grey, and to a size (padded to its aspect ratio, then resized).

One conversion for folders, `.npz` files and built-in datasets, so the same picture gives the same
pixels whichever way it came in:

- grey: ITU-R 601-2 luma, L = (19595 R + 38470 G + 7471 B + 2^15) >> 16, Pillow's "L" conversion
  to the bit (`luma` computes it on arrays, `Image.convert("L")` on files);
- size (H, W): the image is padded to the aspect ratio W:H with the median of its border pixels (each
  channel's own), centred, so nothing is cut off and shapes are not stretched, then resized with a
  Lanczos filter. vaelab's first folder reader did this for 28x28 grey images: the same bytes.
"""

from __future__ import annotations

import numpy as np

GREY = "greyscale (ITU-R 601-2 luma)"
RESIZE = "padded to the aspect ratio with the border's median, Lanczos-resized"


def luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 colour images (..., 3) -> uint8 grey images (...), exactly as Pillow's convert("L")."""
    r, g, b = (rgb[..., k].astype(np.uint32) for k in range(3))
    return ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16).astype(np.uint8)


def fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 image (h, w) or (h, w, 3) -> (H, W) or (H, W, 3): padded to W:H with its border's median, resized."""
    from PIL import Image

    height, width = size
    h, w = image.shape[:2]
    if h * width != w * height:  # another aspect ratio: pad the short side
        ph, pw = (h, round(h * width / height)) if w * height < h * width else (round(w * height / width), w)
        ph, pw = max(ph, h), max(pw, w)
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        padded = np.empty((ph, pw, *image.shape[2:]), np.uint8)
        padded[...] = np.median(border, axis=0).astype(np.uint8)
        top, left = (ph - h) // 2, (pw - w) // 2
        padded[top : top + h, left : left + w] = image
        image = padded
    if image.shape[:2] != (height, width):
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))
    return image
