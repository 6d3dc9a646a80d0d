"""Run the three Fashion-MNIST collapse pipelines and print the NC curves and the final table.

    OMP_NUM_THREADS=1 python examples/collapse/measure_fmnist.py [--store sqlite:///collapse.db]

What docs/collapse.md reports. Each pipeline is logged to MLflow as usual; the
per-epoch curves are read back from the metric history.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIPELINES = {"standard": "fmnist_standard.toml", "PGD-AT": "fmnist_pgd_at.toml", "TRADES": "fmnist_trades.toml"}
CURVE = ("nc1", "nc2_equiangular", "nc3", "nc4", "net_acc")
SETS = ("clean", "perturbed", "noise")


def host():
    from deepscope.testing import make_host

    import deepscope_collapse
    import deepscope_standard

    return make_host(deepscope_standard, deepscope_collapse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite:///collapse.db", help="MLflow tracking URI")
    parser.add_argument("--only", nargs="*", default=list(PIPELINES), help="subset of " + ", ".join(PIPELINES))
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    from deepscope.testing import run_toml

    client = MlflowClient(args.store)
    finals = {}
    for label in args.only:
        start = time.time()
        result = run_toml((HERE / PIPELINES[label]).read_text(), host(), tracking_uri=args.store,
                          file=PIPELINES[label])
        print(f"\n## {label}: {PIPELINES[label]} -> run {result.run_id}, {result.status}, "
              f"{time.time() - start:.0f} s")
        print("| epoch | " + " | ".join(f"{s} {m}" for s in SETS[:2] for m in CURVE) + " |")
        print("|---" * (1 + 2 * len(CURVE)) + "|")
        history = {}
        for s in SETS[:2]:
            for m in CURVE:
                for point in client.get_metric_history(result.run_id, f"probe/neural-collapse/{s}/{m}"):
                    history.setdefault(point.step, {})[f"{s}/{m}"] = point.value
        for epoch in sorted(history):
            row = history[epoch]
            print(f"| {epoch} | " + " | ".join(f"{row.get(f'{s}/{m}', float('nan')):.3g}"
                                              for s in SETS[:2] for m in CURVE) + " |")
        finals[label] = result.metrics
    print("\n## final (after training)")
    keys = [("NC1", "nc1"), ("NC2 equinorm", "nc2_equinorm"), ("NC2 equiangular", "nc2_equiangular"),
            ("NC3", "nc3"), ("NC4", "nc4"), ("network acc", "net_acc")]
    print("| trainer | set | " + " | ".join(k for k, _ in keys) + " | NCC test acc | network test acc |")
    print("|---" * (4 + len(keys)) + "|")
    for label, m in finals.items():
        for s in SETS:
            nc = " | ".join(f"{m.get(f'probe/neural-collapse-layers/{s}/{k}', float('nan')):.3g}" for _, k in keys)
            ncc = m.get(f"probe/ncc-accuracy/{s}/ncc_acc", float("nan"))
            net = m.get(f"probe/ncc-accuracy/{s}/net_acc", float("nan"))
            print(f"| {label} | {s} | {nc} | {ncc:.3f} | {net:.3f} |")
    print("\n## per layer (final, clean -> perturbed)")
    for label, m in finals.items():
        layers = sorted({k.split("/layer/")[1].split("/")[0] for k in m if "neural-collapse-layers" in k
                         and "/layer/" in k})
        for layer in layers + ["penultimate"]:
            part = "" if layer == "penultimate" else f"layer/{layer}/"
            get = lambda s, k: m.get(f"probe/neural-collapse-layers/{s}/{part}{k}", float("nan"))  # noqa: E731
            ncc = lambda s: m.get(f"probe/ncc-accuracy/{s}/{part}ncc_acc", float("nan"))  # noqa: E731
            print(f"| {label} | {layer} | NC1 {get('clean', 'nc1'):.3g} -> {get('perturbed', 'nc1'):.3g} | "
                  f"NC4 {get('clean', 'nc4'):.3g} -> {get('perturbed', 'nc4'):.3g} | "
                  f"centred angle {get('perturbed', 'align/angle_centred'):.3g} deg | "
                  f"NCC acc {ncc('clean'):.3f} -> {ncc('perturbed'):.3f} |")


if __name__ == "__main__":
    main()
