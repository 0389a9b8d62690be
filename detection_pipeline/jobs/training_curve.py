"""The PNG training curve shown with a training run: loss and bbox mAP per epoch."""

from pathlib import Path

from ..mmdet_runner.specs import BEST_METRIC


def draw_training_curve(epochs: list[dict], path: Path) -> Path:
    # Imported here: every run worker and daemon loads the jobs, and only training draws.
    import matplotlib

    matplotlib.use("Agg")  # run workers have no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    numbers = [epoch["epoch"] for epoch in epochs]
    figure, (loss_axes, map_axes) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axes.plot(numbers, [epoch["loss"] for epoch in epochs], marker="o")
    loss_axes.set(title="training loss", xlabel="epoch")
    map_axes.plot(
        numbers, [epoch.get(BEST_METRIC, 0.0) for epoch in epochs], marker="o", color="tab:green"
    )
    map_axes.set(title="validation bbox mAP", xlabel="epoch", ylim=(0, 1))
    for axes in (loss_axes, map_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
