"""Tests for gptcourse.plotting: the loss curve and heatmap helpers."""

import matplotlib

matplotlib.use("Agg")  # no window: tests only inspect what was drawn

import matplotlib.pyplot as plt
import pytest
import torch

from gptcourse.plotting import char_label, plot_heatmap, plot_losses

HISTORY = {"step": [0, 10, 20], "train": [4.2, 3.0, 2.6], "val": [4.3, 3.1, 2.7],
           "batch_loss": [4.2 - 0.08 * i for i in range(20)]}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_plot_losses_draws_train_val_and_batches():
    ax = plot_losses(HISTORY, title="bigram")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["batch loss", "train (estimate)", "val (estimate)"]
    train_line = ax.get_lines()[1]
    assert list(train_line.get_xdata()) == HISTORY["step"]
    assert list(train_line.get_ydata()) == HISTORY["train"]
    assert len(ax.get_lines()[0].get_xdata()) == 20
    assert ax.get_title() == "bigram"
    assert ax.get_xlabel() == "step"


def test_plot_losses_reference_lines_and_options():
    _, ax = plt.subplots()
    returned = plot_losses(HISTORY, ax=ax, hlines={"counting floor": 2.5}, show_batch_loss=False)
    assert returned is ax
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["train (estimate)", "val (estimate)", "counting floor (2.500)"]
    assert list(ax.get_lines()[2].get_ydata()) == [2.5, 2.5]


def test_plot_losses_without_batch_losses():
    history = {key: HISTORY[key] for key in ("step", "train", "val")}
    ax = plot_losses(history)
    assert len(ax.get_lines()) == 2


@pytest.mark.parametrize(
    "history, error, match",
    [
        ([1, 2, 3], TypeError, "the dict that train_simple returns"),
        ({"step": [0], "train": [1.0]}, ValueError, r"missing \['val'\]"),
        ({"step": [], "train": [], "val": []}, ValueError, "no evaluations yet"),
        ({"step": [0, 1], "train": [1.0], "val": [1.0, 2.0]}, ValueError, "same length"),
    ],
)
def test_plot_losses_bad_history(history, error, match):
    with pytest.raises(error, match=match):
        plot_losses(history)


def test_heatmap_shows_the_matrix_with_labels():
    matrix = torch.tensor([[0.1, 0.9], [0.5, 0.5], [1.0, 0.0]])
    ax = plot_heatmap(matrix, row_labels=["a", "b", "c"], col_labels=["x", "y"], title="t",
                      xlabel="next", ylabel="previous")
    image = ax.get_images()[0]
    assert image.get_array().shape == (3, 2)
    assert image.get_array()[0, 1] == pytest.approx(0.9)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y"]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("t", "next", "previous")


def test_heatmap_accepts_nested_lists_without_labels():
    ax = plot_heatmap([[1, 2], [3, 4]], colorbar=False)
    assert ax.get_images()[0].get_array().shape == (2, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"matrix": [1, 2, 3]}, "matrix must be 2-D"),
        ({"matrix": [[1, 2]], "row_labels": ["a", "b"]}, "row_labels has 2 labels for 1 rows"),
        ({"matrix": [[1, 2]], "col_labels": ["a"]}, "col_labels has 1 labels for 2 columns"),
    ],
)
def test_heatmap_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_heatmap(**kwargs)


def test_char_label_makes_invisible_characters_visible():
    assert [char_label(c) for c in ["\n", " ", "\t", "a"]] == ["\\n", "␣", "\\t", "a"]
