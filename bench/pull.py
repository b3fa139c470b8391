"""Benchmark pull sites: the latency a relay adds per federated step, against HTTPS and in-process.

The three demo sites run three ways over the same split of Eunomia: in-process; as
``fedflow site serve`` processes reached over HTTPS with mutual TLS; and as site agents
(``python -m executors.pull agent``) that dial out to a relay process
(``python -m executors.pull relay``), every connection mutual TLS on loopback. For each
way it measures, interleaved so that a change in the machine's load hits all three alike:

- one protocol round trip (``health``) through the transport;
- a bare federated step: at the three sites at once, pre-gate, run, wait, airlock release and
  receipt check (what a step's Prefect tasks call), without Prefect;
- a whole federated step through ``run_analysis`` (Prefect flow, tasks, artifacts).

It also records the TCP addresses each site process listens on: an HTTPS site service its
port; a pull agent nothing it could be reached at (at most loopback, for its own Dask).

Run ``python bench/pull.py``; it prints the figures and writes ``bench/results/pull.json``.
Each figure is a median; the machine's load average is recorded beside them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from quiet import quiet_logs
from record import machine, save

RESULTS = Path(__file__).parent / "results" / "pull.json"
GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}
ROUND_TRIPS = 200
BARE_STEPS = 30
FLOW_STEPS = 11
WAYS = ("in_process", "https", "pull")


def median_ms(times: list[float]) -> float:
    return round(1000 * statistics.median(times), 2)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bare_step(session: Any) -> None:
    """One step at every site at once: check, submit, wait, release, verify the receipt."""
    from fedflow.core.messages import JobState, Request
    from fedflow.core.registry import default_registry
    from governance.receipts import verify_release

    ref = default_registry().get("cohort_count").ref()
    transports, token = session.transports, session.token

    def at(site: str) -> None:
        transport = transports[site]
        request = Request(analysis=ref, params=GI_BLEED, dataset="omop", token=token)
        assert transport.check(request).allowed
        job = transport.submit(request)
        assert transport.wait(job, 60).state is JobState.QUARANTINED
        verify_release(transport.release(job), transport.receipt_key, site=site, request=request)

    with ThreadPoolExecutor(len(transports)) as pool:
        list(pool.map(at, transports))


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )


def wait_until(ready: Callable[[], object], what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ready()
            return
        except Exception:  # not up yet
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{what} not ready after {timeout:g} s")


def main() -> None:
    quiet_logs()
    from executors.process import SiteProcess, free_port
    from executors.pull.setup import prepare_pull
    from flows import connect, prefect_api, run_analysis
    from flows.demo import (
        DEMO_SITES,
        build_demo,
        eunomia_tables,
        split_by_person,
        write_https_profile,
    )
    from flows.federation import Federation

    results: dict[str, Any] = machine()
    names = [s.name for s in DEMO_SITES]
    with tempfile.TemporaryDirectory() as tmp, prefect_api(Path(tmp) / "prefect") as api:
        root = Path(tmp)
        api.wait()  # before the site processes start: on a busy machine it takes a while
        parts = split_by_person(eunomia_tables(), [s.share for s in DEMO_SITES])
        profiles = {"in_process": build_demo(root / "in-process", parts)}
        build_demo(root / "https", parts)
        profiles["https"] = write_https_profile(root / "https", {n: free_port() for n in names})
        setup = prepare_pull(build_demo(root / "pull", parts), names, relay_port=free_port())
        profiles["pull"] = setup.profile
        services = [
            SiteProcess(
                root / "https" / "sites" / e.name / "site.yaml",
                port=int(str(e.url).rsplit(":", 1)[1]),
                log=root / "logs" / f"{e.name}.log",
            ).start()
            for e in Federation.load(profiles["https"]).sites
        ]
        children = [start(["executors.pull", "relay", "--config", str(setup.relay_config)],
                          root / "logs" / "relay.log")]  # fmt: skip
        for name, files in setup.agents.items():
            children.append(
                start(
                    ["executors.pull", "agent", "--config", str(files.config),
                     "--relay", setup.relay_url, "--ca", str(files.ca),
                     "--cert", str(files.cert), "--key", str(files.key)],
                    root / "logs" / f"agent-{name}.log",
                )
            )  # fmt: skip
        try:
            with ExitStack() as stack:
                opened = {way: stack.enter_context(connect(profiles[way])) for way in WAYS}
                for way in ("https", "pull"):
                    for transport in opened[way].transports.values():
                        wait_until(partial(transport.info), f"{way} {transport.site}")
                pids: dict[str, int | None] = {
                    f"agent {n}": c.pid for n, c in zip(names, children[1:], strict=True)
                }
                pids |= {f"service {n}": s.pid for n, s in zip(names, services, strict=True)}
                results["listening"] = listening(pids)
                results.update(measure(opened, run_analysis))
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.wait(60)
            for service in services:
                service.stop()
    save(RESULTS, results)
    print(json.dumps(results, indent=2))


def listening(pids: dict[str, int | None]) -> dict[str, list[str]]:
    """The TCP addresses each process listens on (a pull agent: none but loopback, if any)."""
    import psutil

    return {
        name: sorted(
            f"{c.laddr.ip}:{c.laddr.port}"
            for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        )
        for name, pid in pids.items()
        if pid is not None
    }


def measure(opened: dict[str, Any], run_analysis: Callable[..., Any]) -> dict[str, Any]:
    """Every figure, interleaving the three ways in each repetition."""
    out: dict[str, Any] = {}
    probes = {way: next(iter(opened[way].transports.values())) for way in ("https", "pull")}
    trips: dict[str, list[float]] = {way: [] for way in probes}
    for _ in range(ROUND_TRIPS):
        for way, probe in probes.items():
            trips[way].append(timed(probe.health))
    out["health_round_trip_ms"] = {way: median_ms(t) for way, t in trips.items()}
    bare: dict[str, list[float]] = {way: [] for way in WAYS}
    for way in WAYS:  # warm-up
        bare_step(opened[way])
    for _ in range(BARE_STEPS):
        for way in WAYS:
            bare[way].append(timed(partial(bare_step, opened[way])))
    out["bare_step_ms"] = {way: median_ms(t) for way, t in bare.items()}
    flow: dict[str, list[float]] = {way: [] for way in WAYS}
    for way in WAYS:  # warm-up
        run_analysis("cohort_count", GI_BLEED, federation=opened[way])
    for _ in range(FLOW_STEPS):
        for way in WAYS:
            step = partial(run_analysis, "cohort_count", GI_BLEED, federation=opened[way])
            flow[way].append(timed(step))
    out["flow_step_ms"] = {way: median_ms(t) for way, t in flow.items()}
    out["pull_added_ms"] = {
        kind: {
            "over_https": round(out[kind]["pull"] - out[kind]["https"], 2),
            "over_in_process": round(out[kind]["pull"] - out[kind]["in_process"], 2),
        }
        for kind in ("bare_step_ms", "flow_step_ms")
    }
    out["pull_added_ms"]["health_round_trip_over_https"] = round(
        out["health_round_trip_ms"]["pull"] - out["health_round_trip_ms"]["https"], 2
    )
    out["repetitions"] = {
        "round_trips": ROUND_TRIPS,
        "bare_steps": BARE_STEPS,
        "flow_steps": FLOW_STEPS,
    }
    return out


if __name__ == "__main__":
    main()
