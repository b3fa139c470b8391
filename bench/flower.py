"""Flower's FedAvg on the GLM benchmark's logistic model: rounds and time to the pooled fit.

Run it in an environment with the ``bench`` extra (``flwr[simulation]``, Flower 1.32 with
Ray: newer Flower pins a fastapi that Prefect 3.9 does not admit, and 1.32 still pins older
typer, rich and protobuf than a fresh install of the platform gets, so give it its own
virtualenv)::

    uv venv .venv-bench && uv pip install -p .venv-bench -e ".[bench]"
    .venv-bench/bin/python bench/flower.py [--sites 10] [--rows 1000000] [--rounds 25]

It writes ``bench/results/flower.json``. The data are ``bench/glm.py``'s seeded simulation
(intercept and 9 N(0, 1) covariates, a logistic outcome), split into equal consecutive sites
as there. The model is the same logistic regression, trained the way Flower trains models:
FedAvg (``flwr.serverapp.strategy.FedAvg``, weighted by each site's examples) over
``ClientApp`` s that each run ``--local-epochs`` full-batch gradient steps on the mean
log-likelihood of their own rows with learning rate ``--lr`` (4 is 1/L for these data: the
Hessian of the mean log-likelihood is at most 1/4 per unit-variance column), in Flower's
simulation runtime (Ray). After every round the server scores the global coefficients on the
pooled data (for the benchmark only) and we report the first round whose log-likelihood is
within 1e-6 of the pooled maximum-likelihood fit's (numpy Newton), relative to it and
absolute, with the time from the first round (after Ray started: ``startup_s``), and the gap
after each reported round.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from glm import newton_numpy, simulate_arrays  # bench/glm.py (numpy only here)
from record import machine, save

RESULTS = Path(__file__).parent / "results" / "flower.json"
TOLERANCE = 1e-6
_DATA: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def site_data(rows: int, sites: int, site: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of one site (consecutive equal shares of the simulated data)."""
    if (rows, sites) not in _DATA:
        _DATA.clear()
        _DATA[(rows, sites)] = simulate_arrays(rows)
    x, y = _DATA[(rows, sites)]
    bounds = np.linspace(0, rows, sites + 1).astype(int)
    return x[bounds[site] : bounds[site + 1]], y[bounds[site] : bounds[site + 1]]


def loglik(x: np.ndarray, y: np.ndarray, beta: np.ndarray) -> float:
    eta = x @ beta
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def local_steps(x: np.ndarray, y: np.ndarray, beta: np.ndarray, epochs: int, lr: float) -> Any:
    """Full-batch gradient ascent on the site's mean log-likelihood."""
    for _ in range(epochs):
        mu = 1 / (1 + np.exp(-(x @ beta)))
        beta = beta + lr * (x.T @ (y - mu)) / len(y)
    return beta


def build_apps(rows: int, sites: int, rounds: int, epochs: int, lr: float, log: list[Any]) -> Any:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        site = int(context.node_config["partition-id"])
        x, y = site_data(rows, sites, site)
        beta = msg.content["arrays"].to_numpy_ndarrays()[0]
        config = msg.content["config"]
        beta = local_steps(x, y, beta, int(config["epochs"]), float(config["lr"]))
        content = RecordDict(
            {
                "arrays": ArrayRecord([beta]),
                "metrics": MetricRecord({"num-examples": len(y)}),
            }
        )
        return Message(content=content, reply_to=msg)

    server = ServerApp()
    pooled_x, pooled_y = simulate_arrays(rows)

    def score(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        beta = arrays.to_numpy_ndarrays()[0]
        log.append((server_round, time.perf_counter(), loglik(pooled_x, pooled_y, beta)))
        return MetricRecord({"loglik": log[-1][2]})

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=sites, min_available_nodes=sites)
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord([np.zeros(pooled_x.shape[1])]),
            num_rounds=rounds,
            train_config=ConfigRecord({"epochs": epochs, "lr": lr}),
            evaluate_fn=score,
        )

    return server, client


def run(rows: int, sites: int, rounds: int, epochs: int, lr: float) -> dict[str, Any]:
    from flwr.simulation import run_simulation

    x, y = simulate_arrays(rows)
    started = time.perf_counter()
    beta_star, newton_rounds = newton_numpy(x, y)
    newton_s = time.perf_counter() - started
    target = loglik(x, y, beta_star)
    log: list[Any] = []
    server, client = build_apps(rows, sites, rounds, epochs, lr, log)
    started = time.perf_counter()
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=sites,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    wall = time.perf_counter() - started
    first = next((t for r, t, _ in log if r == 0), started)  # Ray is up, round 1 starts
    gaps = [(r, t - first, abs(ll - target)) for r, t, ll in log if r > 0]
    relative = next(((r, t) for r, t, gap in gaps if gap <= TOLERANCE * abs(target)), None)
    absolute = next(((r, t) for r, t, gap in gaps if gap <= TOLERANCE), None)
    return {
        "sites": sites,
        "rows": rows,
        "covariates": x.shape[1],
        "strategy": "FedAvg",
        "local_epochs": epochs,
        "learning_rate": lr,
        "rounds_run": rounds,
        "wall_s": round(wall, 2),
        "pooled_loglik": target,
        "pooled_numpy_newton_s": round(newton_s, 3),
        "pooled_numpy_rounds": newton_rounds,
        "startup_s": round(first - started, 2),
        "rounds_to_relative_tolerance": None if relative is None else relative[0],
        "seconds_to_relative_tolerance": None if relative is None else round(relative[1], 2),
        "rounds_to_absolute_tolerance": None if absolute is None else absolute[0],
        "seconds_to_absolute_tolerance": None if absolute is None else round(absolute[1], 2),
        "loglik_gap_after_last_round": gaps[-1][2] if gaps else None,
        "loglik_gap_by_round": {str(r): gap for r, _, gap in gaps if r in _REPORTED},
    }


_REPORTED = {1, 2, 5, 10, 20, 50, 100, 200, 500}


def main() -> None:
    parser = argparse.ArgumentParser(description="FedAvg in Flower on the GLM benchmark.")
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--local-epochs", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--lr", type=float, default=4.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    import flwr

    results: dict[str, Any] = {
        "flwr": flwr.__version__,
        **machine(),
        "tolerance": TOLERANCE,
        "runs": [],
    }
    for epochs in args.local_epochs:
        point = run(args.rows, args.sites, args.rounds, epochs, args.lr)
        print(json.dumps(point), flush=True)
        results["runs"].append(point)
    save(args.output, results)


if __name__ == "__main__":
    main()
