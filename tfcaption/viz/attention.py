"""The "show, attend and tell" figure: the image, then where the decoder looked for each word.

Input is one result of `CaptionPredictor.caption_with_attention`; drawing uses
matplotlib's object API on an Agg canvas (no pyplot, no display, no global
figure state), so it runs in scripts, tests and servers alike.
"""

import numpy as np

PANEL_INCHES = 2.0  # side of one panel
GATE_INCHES = 0.7  # height of the gate bar chart under a word's panel
DPI = 100
MAX_COLUMNS = 6
EMPTY_CAPTION = "(empty caption)"  # the title of a caption with no words (<eos> came first)


def upsample(grid_map, height, width, method="bilinear"):
    """A (rows, cols) patch map resized to (height, width) pixels.

    "nearest" shows the patches exactly as the model saw them; "bilinear"
    (the classic look) interpolates between patch centres, clamping at the
    borders, so a map that sums to 1 keeps its shape but not its sum.
    """
    grid_map = np.asarray(grid_map, np.float32)
    rows, cols = grid_map.shape
    if method == "nearest":
        r = np.minimum((np.arange(height) * rows) // height, rows - 1)
        c = np.minimum((np.arange(width) * cols) // width, cols - 1)
        return grid_map[r][:, c]
    if method != "bilinear":
        raise ValueError(f"upsample method must be 'bilinear' or 'nearest', got {method!r}.")
    # Pixel centres in patch coordinates (patch i has its centre at i).
    y = np.clip((np.arange(height) + 0.5) * rows / height - 0.5, 0, rows - 1)
    x = np.clip((np.arange(width) + 0.5) * cols / width - 0.5, 0, cols - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, rows - 1), np.minimum(x0 + 1, cols - 1)
    wy, wx = (y - y0)[:, None], (x - x0)[None, :]
    top = grid_map[y0][:, x0] * (1 - wx) + grid_map[y0][:, x1] * wx
    bottom = grid_map[y1][:, x0] * (1 - wx) + grid_map[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def attention_figure(result, path=None, show_gates=False, max_words=None, interpolation="bilinear",
                     alpha=0.6, cmap="jet"):
    """Draws the image and one attention panel per generated word.

    A caption with no words (the model emitted <eos> first) draws the image
    alone, titled "(empty caption)".

    Each word's map is scaled to its own maximum before blending, so every
    panel uses the full colour range (the maps of one caption sum to 1 each,
    and a word that looks at one patch would otherwise drown the others).

    Args:
        result: a dict from `caption_with_attention` (`image`, `words`,
            `attention` [words, rows, cols], `gates` [words, levels] or None
            (a decoder without gates draws no gate charts), `caption`).
        path: where to write a PNG; None draws only.
        show_gates: add under each word a bar chart of the mean meshed gate
            per encoder level (how much the word drew on low vs high levels).
        max_words: draw at most this many words (long captions get wide).
        interpolation: "bilinear" or "nearest" upsampling of the patch grid.
        alpha: opacity of the heatmap over the image.
        cmap: matplotlib colormap name for the heatmap.

    Returns:
        the `matplotlib.figure.Figure` (axes: image, then words, then gate
        charts when `show_gates`).

    Example:
        result = tfcaption.load("runs/shapes-small").caption_with_attention("scene.png")
        attention_figure(result, "scene-attention.png", show_gates=True)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if result.get("image") is None or np.ndim(result["attention"]) != 3:
        raise ValueError("attention figures draw a token grid over the image; this model's attention is per region "
                         "(region features have no pixels to draw on).")
    image = np.asarray(result["image"])
    words = list(result["words"])
    attention = np.asarray(result["attention"], np.float32)
    if result.get("gates") is None:
        show_gates = False  # a decoder without gates (the transformer decoder)
        gates = np.zeros((len(words), 0), np.float32)
    else:
        gates = np.asarray(result["gates"], np.float32)
    if len(attention) != len(words):
        raise ValueError(f"{len(words)} words but {len(attention)} attention maps.")
    if max_words is not None:
        words, attention, gates = words[:max_words], attention[:max_words], gates[:max_words]
    height, width = image.shape[:2]

    panels = 1 + len(words)
    columns = min(panels, MAX_COLUMNS)
    panel_rows = -(-panels // columns)
    aspect = height / width
    row_inches = PANEL_INCHES * aspect + 0.35  # room for the word above each panel
    if show_gates:
        row_inches += GATE_INCHES
    title_inches = 0.6
    figure = Figure(figsize=(PANEL_INCHES * columns, row_inches * panel_rows + title_inches), dpi=DPI)
    FigureCanvasAgg(figure)
    ratios = [PANEL_INCHES * aspect, GATE_INCHES] if show_gates else [PANEL_INCHES * aspect]
    grid = figure.add_gridspec(panel_rows * len(ratios), columns, height_ratios=ratios * panel_rows,
                               left=0.03, right=0.98, bottom=0.03, top=1 - title_inches / figure.get_figheight(),
                               hspace=0.4, wspace=0.12)
    # A caption that ended at its first step is a valid result: the figure is the image alone, titled so.
    title = result.get("caption", " ".join(words)) or EMPTY_CAPTION
    figure.suptitle(title, fontsize=11, y=1 - 0.15 / figure.get_figheight())

    def cell(index, part=0):
        row, column = divmod(index, columns)
        return grid[row * len(ratios) + part, column]

    ax = figure.add_subplot(cell(0))
    ax.imshow(image)
    ax.set_title("image", fontsize=10)
    ax.axis("off")
    for i, word in enumerate(words):
        heat = upsample(attention[i], height, width, interpolation)
        heat = heat / max(float(heat.max()), 1e-12)
        ax = figure.add_subplot(cell(i + 1))
        ax.imshow(image)
        ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
        ax.set_title(word, fontsize=10)
        ax.axis("off")
    if show_gates:
        levels = gates.shape[-1] if gates.ndim == 2 else 0
        for i in range(len(words)):
            ax = figure.add_subplot(cell(i + 1, 1))
            ax.bar(np.arange(levels), gates[i], color="tab:blue")
            ax.set_ylim(0.0, max(1.0, float(gates.max()) if gates.size else 1.0))
            ax.set_xticks(np.arange(levels), [f"L{n + 1}" for n in range(levels)], fontsize=7)
            ax.set_yticks([0.0, 1.0], ["0", "1"], fontsize=6)
            ax.set_title("gate per level", fontsize=7, pad=2)
    if path is not None:
        figure.savefig(path, format="png", dpi=DPI)
    return figure
