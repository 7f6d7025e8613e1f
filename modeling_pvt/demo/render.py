"""What the demo page shows, as plain images and rows (no Gradio here): the segmentation overlay and its legend, boxes
drawn on the image and as table rows, and the example pictures that ship with scikit-learn."""

from __future__ import annotations

import colorsys
import html
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .predict import Detection

# The first colours are distinct at a glance; later classes step round the hue circle (ADE20K has 150).
_FIRST_COLOURS = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (128, 0, 0),
]
TABLE_HEADERS = ["label", "score", "x0", "y0", "x1", "y1"]


def palette(num_labels: int) -> np.ndarray:
    """A fixed uint8 (num_labels, 3) colour per class id."""
    colours = list(_FIRST_COLOURS[:num_labels])
    for index in range(len(colours), num_labels):
        hue = (index * 0.618033988749895) % 1.0
        colours.append(tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.65 + 0.3 * (index % 2), 0.95)))
    return np.asarray(colours, dtype=np.uint8).reshape(-1, 3)


def _hex(colour) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in colour))


def transparent_ids(id2label: dict[int, str]) -> list[int]:
    """Classes left untinted: those named background (the grid digits' class 0)."""
    return [index for index, name in id2label.items() if name.strip().lower() == "background"]


# ---------------------------------------------------------------------------------------------------- segmentation


def overlay(image: Image.Image, mask: np.ndarray, colours: np.ndarray, opacity: float, transparent=()) -> Image.Image:
    """`image` with each class of `mask` (H, W) blended in its colour at `opacity` (0: the image, 1: the colours);
    the `transparent` classes and ids outside the palette stay as they are."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    tinted = (mask >= 0) & (mask < len(colours)) & ~np.isin(mask, list(transparent))
    colour = colours[np.where(tinted, mask, 0)].astype(np.float32)
    alpha = float(np.clip(opacity, 0.0, 1.0)) * tinted[..., None]
    return Image.fromarray((pixels * (1 - alpha) + colour * alpha).round().astype(np.uint8))


def legend_rows(mask: np.ndarray, id2label: dict[int, str], colours: np.ndarray) -> list[tuple[str, str, float]]:
    """(class name, colour as #rrggbb, share of the pixels) for each class present, largest first."""
    counts = np.bincount(mask.ravel().clip(min=0), minlength=len(colours))
    rows = []
    for class_id in np.flatnonzero(counts):
        colour = _hex(colours[class_id]) if class_id < len(colours) else "#808080"
        rows.append((id2label.get(int(class_id), f"class {class_id}"), colour, counts[class_id] / mask.size))
    return sorted(rows, key=lambda row: -row[2])


def legend_html(rows: list[tuple[str, str, float]]) -> str:
    """The legend as a small HTML table: a colour swatch, the class name and its pixel share per row."""
    if not rows:
        return ""
    body = "".join(
        f'<tr class="legend-row"><td><span style="display:inline-block;width:1.1em;height:1.1em;'
        f'border-radius:3px;background:{colour};vertical-align:middle"></span></td>'
        f'<td class="legend-name">{html.escape(name)}</td><td class="legend-share">{share:.1%}</td></tr>'
        for name, colour, share in rows
    )
    return (
        f'<table class="pvt-legend"><thead><tr><th></th><th>class</th><th>pixels</th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


# ------------------------------------------------------------------------------------------------------- detection


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def draw_detections(image: Image.Image, detections: list[Detection], colours: np.ndarray) -> Image.Image:
    """A copy of `image` with each box outlined in its class colour and labelled "label 0.87" above it."""
    drawn = image.convert("RGB").copy()
    draw = ImageDraw.Draw(drawn)
    line = max(2, round(max(image.size) / 300))
    font = _font(max(12, round(max(image.size) / 45)))
    for found in sorted(detections, key=lambda found: found.score):  # the best box drawn last, on top
        colour = tuple(int(c) for c in colours[found.class_id % len(colours)])
        x0, y0, x1, y1 = found.box
        draw.rectangle((x0, y0, max(x0, x1), max(y0, y1)), outline=colour, width=line)
        text = f"{found.label} {found.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        height = bottom - top + 2 * line
        top_edge = y0 - height if y0 - height >= 0 else y0
        draw.rectangle((x0, top_edge, x0 + right - left + 2 * line, top_edge + height), fill=colour)
        text_colour = (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)
        draw.text((x0 + line, top_edge + line - top), text, fill=text_colour, font=font)
    return drawn


def table_rows(detections: list[Detection], scale: float = 1.0) -> list[list]:
    """Rows for TABLE_HEADERS, best first; boxes multiplied by `scale` (to the uploaded image's pixels)."""
    return [
        [found.label, round(found.score, 3), *(round(value * scale, 1) for value in found.box)]
        for found in sorted(detections, key=lambda found: -found.score)
    ]


# -------------------------------------------------------------------------------------------------------- examples


def _digit_pictures() -> tuple[Image.Image, Image.Image]:
    """One handwritten digit as the digits model sees it (grey strokes on black), and a 2x2 grid of digits on a dark
    noisy canvas like the segmentation default's; both upscaled 4x with nearest neighbour to be seen on a page."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    cells = [Image.fromarray(pixels[index]).resize((32, 32), Image.BICUBIC) for index in (0, 11, 22, 33)]
    rng = np.random.default_rng(0)
    canvas = rng.uniform(0.0, 0.4, 3) + rng.normal(0.0, 0.08, (64, 64, 3))
    for cell, image in enumerate(cells):
        top, left = (cell // 2) * 32, (cell % 2) * 32
        ink = np.asarray(image, dtype=np.float64)[..., None] / 255.0
        colour = rng.uniform(0.6, 1.0, 3)
        canvas[top : top + 32, left : left + 32] = canvas[top : top + 32, left : left + 32] * (1 - ink) + colour * ink
    grid = Image.fromarray((canvas.clip(0, 1) * 255).round().astype(np.uint8))
    return cells[1].convert("RGB").resize((128, 128), Image.NEAREST), grid.resize((256, 256), Image.NEAREST)


def example_images(folder: str | Path | None = None) -> list[str]:
    """Paths of example pictures written from what scikit-learn ships (no network): a photo of a temple in China,
    a flower, a handwritten digit and a grid of digits. Written once to `folder` (default: the temp directory)."""
    folder = Path(folder or Path(tempfile.gettempdir()) / "pvt-demo-examples")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ("china.jpg", "flower.jpg", "digit.png", "digit-grid.png")}
    if not all(path.is_file() for path in paths.values()):
        from sklearn.datasets import load_sample_image

        digit, grid = _digit_pictures()
        pictures = {
            "china.jpg": Image.fromarray(load_sample_image("china.jpg")),
            "flower.jpg": Image.fromarray(load_sample_image("flower.jpg")),
            "digit.png": digit,
            "digit-grid.png": grid,
        }
        for name, picture in pictures.items():
            # Written aside and renamed: two demos starting at once never read a half-written file.
            partial = folder / f".{name}.{os.getpid()}"
            picture.save(partial, format="JPEG" if name.endswith(".jpg") else "PNG", quality=90)
            os.replace(partial, paths[name])
    return [str(path) for path in paths.values()]
