"""The diagrams draw without error and carry the code's names and shapes as text."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gptcourse import diagrams  # noqa: E402

EXPECTED_LABELS = {
    "gpt_architecture": ["tok_emb", "pos_emb", "drop_emb", "trf_blocks", "final_norm", "out_head",
                         "(B, T)", "(B, T, C)", "logits"],
    "attention_head": ["query", "key", "value", "softmax", "masked_fill", "dropout",
                       "(B, T, C)", "(B, T, T)", "key position", "query position"],
    "transformer_block": ["norm1", "norm2", "att", "ff", "drop_shortcut", "shortcut", "(B, T, C)"],
    "kv_cache": ["KVCache.append", "newest token", "(B, n_heads, T, head_dim)"],
    "training_loop": ["get_batch", "model(x)", "cross_entropy", "backward", "optimizer.step",
                      "estimate_loss", "eval_interval"],
}


def figure_text(fig: Figure) -> str:
    """Every string drawn on the figure, the title included, joined by newlines."""
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title() for ax in fig.axes]
    return "\n".join(texts)


def test_every_diagram_is_tested():
    assert set(diagrams.ALL_DIAGRAMS) == set(EXPECTED_LABELS)


@pytest.mark.parametrize("name", list(EXPECTED_LABELS))
def test_diagram_has_the_code_names(name):
    fig = diagrams.ALL_DIAGRAMS[name]()
    try:
        assert isinstance(fig, Figure)
        text = figure_text(fig)
        missing = [label for label in EXPECTED_LABELS[name] if label not in text]
        assert not missing, f"{name} lacks {missing}"
        fig.canvas.draw()  # renders without error
    finally:
        plt.close(fig)


@pytest.mark.parametrize("name", list(EXPECTED_LABELS))
def test_diagram_texts_do_not_overlap(name):
    fig = diagrams.ALL_DIAGRAMS[name]()
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for ax in fig.axes for t in ax.texts if t.get_text()]
        overlaps = [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
                    if boxes[i].overlaps(boxes[j])]
        assert not overlaps, [(fig.axes[0].texts[i].get_text(), fig.axes[0].texts[j].get_text())
                              for i, j in overlaps]
    finally:
        plt.close(fig)
