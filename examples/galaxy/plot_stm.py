"""Plot STM's decisions from a tracked run: the start-epoch cap, the next stage's validation loss and
lr_img over the iterations, with the stop marked. Reads the metrics `distill/<stage>/...` of MLflow runs.

    .venv/bin/python examples/galaxy/plot_stm.py --experiment galaxy --out docs/galaxy_stm_fmnist.png
"""

from __future__ import annotations

import argparse
import re

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient


def history(client, run_id, key):
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.step for m in points], [m.value for m in points]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="galaxy")
    parser.add_argument("--run-name", default="galaxy-fmnist-ipc", help="runs whose name starts with this")
    parser.add_argument("--stage", default="stm")
    parser.add_argument("--out", default="stm.png")
    args = parser.parse_args()
    client = MlflowClient(tracking_uri=args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    runs = [r for r in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
            if (r.info.run_name or "").startswith(args.run_name) and r.info.status == "FINISHED"
            and r.data.metrics.get(f"distill/{args.stage}/start_epoch_cap") is not None]
    runs.sort(key=lambda r: int((re.search(r"ipc=(\d+)", r.info.run_name or "") or re.search("()", "")).group(1) or 0))
    fig = Figure(figsize=(11, 3.2 * len(runs)))
    FigureCanvasAgg(fig)
    for row, run in enumerate(runs):
        prefix = f"distill/{args.stage}"
        found = re.search(r"ipc=(\d+)", run.info.run_name or "")
        label = f"ipc {found.group(1)}" if found else (run.info.run_name or run.info.run_id)[:30]
        for col, (key, title) in enumerate((("start_epoch_cap", "start-epoch cap"),
                                            ("next_stage_loss", "next-stage validation loss"),
                                            ("lr_img", "lr_img (fine-tuning decays)"))):
            ax = fig.add_subplot(len(runs), 3, 3 * row + col + 1)
            steps, values = history(client, run.info.run_id, f"{prefix}/{key}")
            ax.plot(steps, values, lw=1)
            if key == "start_epoch_cap":
                adv_steps, adv = history(client, run.info.run_id, f"{prefix}/advanced")
                ax.scatter([s for s, a in zip(adv_steps, adv) if a], [values[steps.index(s)] for s, a in
                                                                     zip(adv_steps, adv) if a and s in steps],
                           s=12, color="C1", label="advance", zorder=3)
                ax.legend(loc="lower right", fontsize=7)
            if steps:
                ax.axvline(steps[-1], color="0.5", ls=":", lw=1)
            ax.set_title(f"{title}, {label}", fontsize=9)
            ax.set_xlabel("iteration", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} from {len(runs)} run(s)")


if __name__ == "__main__":
    main()
