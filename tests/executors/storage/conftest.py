"""Real storage emulators for the storage tests, started once per session on loopback ports.

* S3: moto in server mode (``moto[server]``, the ``cloud`` extra), with IAM authentication
  switched on after set-up, so a wrong secret key, a user without a policy, and the site's own
  user on the bucket ``restricted`` (an explicit Deny in its policy) are really refused.
* Azure Blob: Azurite from npm, installed on first use into ``.cache/azurite`` (git-ignored).
  Without ``npm`` on a developer machine the Azure tests skip with a message; in CI (``CI`` set)
  a missing ``npm`` or a failed install fails them.
* GCS: gcp-storage-emulator (the ``cloud`` extra), in memory.

Every emulator, and a local folder, holds the same Eunomia GiBleed tables converted to parquet
under ``<bucket>/omop/`` (:data:`TABLES`), plus ``faulty/`` with a healthy ``person.parquet``, a
truncated ``broken.parquet`` and a CSV named ``notparquet.parquet``.

For other tests (a federation with one site per store): request ``eunomia_urls`` for
``{"local"|"s3"|"az"|"gs": dataset location URL}``; it sets the SDK environment
(``AWS_*``, ``AZURE_STORAGE_CONNECTION_STRING``, ``STORAGE_EMULATOR_HOST``) for the test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from fedflow.core.settings import REPO_ROOT

TABLES = ("person", "condition_occurrence", "concept", "observation_period")
AZURITE_VERSION = "3.37.0"
AZURITE_DIR = REPO_ROOT / ".cache" / "azurite"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret: it is in Microsoft's documentation).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
BUCKET = "eunomia"
RESTRICTED = "restricted"  # an S3 bucket the site's IAM policy explicitly denies


@dataclass
class Store:
    """One running store: its URL scheme, the SDK environment, and an uploader."""

    scheme: str
    env: dict[str, str]
    put: Callable[[str, bytes], None]
    extra: dict[str, str] = field(default_factory=dict)

    def url(self, prefix: str, bucket: str = BUCKET) -> str:
        return f"{self.scheme}://{bucket}/{prefix}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
    """Wait until ``url`` answers any HTTP status (the emulator is up) or fail with its log."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode} before serving:\n{_tail(log)}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{name} did not answer on {url} within 60 s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def _start(cmd: list[str], health: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    """Start an emulator writing to ``log`` (not a pipe: a full pipe would stall it)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    _wait_http(health, proc, name, log)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop an emulator; kill it after a short grace (moto's server waits for idle clients)."""
    proc.terminate()
    try:
        proc.wait(timeout=0.5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the data ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def eunomia_parquet(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder ``omop/`` of Eunomia tables as parquet and ``faulty/`` with bad objects."""
    root = tmp_path_factory.mktemp("eunomia")
    omop, faulty = root / "omop", root / "faulty"
    omop.mkdir()
    faulty.mkdir()
    source = shared_data / "eunomia_gibleed"
    for table in TABLES:
        csv = next(p for p in (source / f"{table}.csv", source / f"{table}.csv.gz") if p.exists())
        # Several row groups, so a person_id filter can skip some by their statistics.
        pq.write_table(pacsv.read_csv(csv), omop / f"{table}.parquet", row_group_size=8192)
    person = (omop / "person.parquet").read_bytes()
    (faulty / "person.parquet").write_bytes(person)
    (faulty / "broken.parquet").write_bytes(person[: len(person) // 2])
    (faulty / "notparquet.parquet").write_bytes((source / "person.csv").read_bytes()[:4096])
    return root


def _upload_all(store: Store, folder: Path) -> None:
    for path in sorted(folder.rglob("*.parquet")):
        store.put(path.relative_to(folder).as_posix(), path.read_bytes())


# -- S3: moto ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_store(eunomia_parquet: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    import boto3

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = _start(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        f"{endpoint}/moto-api/",
        "moto server",
        tmp_path_factory.mktemp("moto") / "moto.log",
    )
    try:
        setup = dict(endpoint_url=endpoint, region_name="us-east-1")
        iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **setup)
        # The site may use S3 except the RESTRICTED bucket; "nobody" has no policy at all.
        site_policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {
                    "Effect": "Deny",
                    "Action": "s3:*",
                    "Resource": [f"arn:aws:s3:::{RESTRICTED}", f"arn:aws:s3:::{RESTRICTED}/*"],
                },
            ],
        }
        keys = {}
        for user in ("fedflow-site", "fedflow-nobody"):
            iam.create_user(UserName=user)
            keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
        iam.put_user_policy(
            UserName="fedflow-site", PolicyName="site", PolicyDocument=json.dumps(site_policy)
        )
        site = keys["fedflow-site"]
        s3 = boto3.client(
            "s3",
            aws_access_key_id=site["AccessKeyId"],
            aws_secret_access_key=site["SecretAccessKey"],
            **setup,
        )
        s3.create_bucket(Bucket=BUCKET)
        store = Store(
            "s3",
            {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": site["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": site["SecretAccessKey"],
                "AWS_DEFAULT_REGION": "us-east-1",
            },
            lambda key, data: s3.put_object(Bucket=BUCKET, Key=key, Body=data),
            {
                "nobody_key": keys["fedflow-nobody"]["AccessKeyId"],
                "nobody_secret": keys["fedflow-nobody"]["SecretAccessKey"],
            },
        )
        _upload_all(store, eunomia_parquet)
        s3.create_bucket(Bucket=RESTRICTED)
        for path in sorted((eunomia_parquet / "omop").glob("*.parquet")):
            s3.put_object(Bucket=RESTRICTED, Key=f"omop/{path.name}", Body=path.read_bytes())
        # From here on moto checks every request's signature and the caller's IAM policy.
        urllib.request.urlopen(
            urllib.request.Request(
                f"{endpoint}/moto-api/reset-auth",
                data=b"0",
                headers={"Content-Type": "text/plain"},  # a form body would hide the count
            )
        ).close()
        yield store
    finally:
        _stop(proc)


# -- Azure Blob: Azurite ----------------------------------------------------------------------
def _azurite_blob() -> Path:
    """The ``azurite-blob`` launcher, installing Azurite from npm on first use."""
    launcher = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if launcher.exists():
        return launcher
    npm = shutil.which("npm")
    if npm is None:
        message = "npm is not installed: Azurite (the Azure Blob emulator) comes from npm"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message + "; install Node.js and npm to run the Azure tests")
    cmd = [npm, "install", "--prefix", str(AZURITE_DIR), "--no-audit", "--no-fund"]
    # Retry a flaky registry twice, but give up on a dead one in seconds rather than a minute.
    cmd += ["--fetch-retries=2", "--fetch-retry-mintimeout=2000", "--fetch-retry-maxtimeout=8000"]
    done = subprocess.run(
        [*cmd, f"azurite@{AZURITE_VERSION}"], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0 or not launcher.exists():
        pytest.fail(
            f"could not install Azurite {AZURITE_VERSION} from npm into {AZURITE_DIR} "
            f"(registry unreachable?):\n{done.stderr[-2000:]}"
        )
    return launcher


def azure_connection_string(endpoint: str, key: str = AZURITE_KEY) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )


@pytest.fixture(scope="session")
def azure_store(eunomia_parquet: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    from azure.storage.blob import BlobServiceClient

    launcher = _azurite_blob()
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    workdir = tmp_path_factory.mktemp("azurite")
    proc = _start(
        [str(launcher), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
         str(workdir), "--silent", "--skipApiVersionCheck"],
        f"{endpoint}/{AZURITE_ACCOUNT}?comp=list",
        "Azurite",
        workdir / "azurite.log",
    )  # fmt: skip
    try:
        conn = azure_connection_string(endpoint)
        container = BlobServiceClient.from_connection_string(conn).create_container(BUCKET)
        store = Store(
            "az",
            {"AZURE_STORAGE_CONNECTION_STRING": conn},
            lambda key, data: container.upload_blob(key, data, overwrite=True),
            {"endpoint": endpoint},
        )
        _upload_all(store, eunomia_parquet)
        yield store
    finally:
        _stop(proc)


# -- GCS: gcp-storage-emulator ----------------------------------------------------------------
@pytest.fixture(scope="session")
def gcs_store(eunomia_parquet: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = _start(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
         "--port", str(port), "--in-memory"],
        f"{endpoint}/",
        "gcp-storage-emulator",
        tmp_path_factory.mktemp("gcs") / "gcs.log",
    )  # fmt: skip
    try:
        client = storage.Client(
            project="fedflow-test",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": endpoint},
        )
        bucket = client.create_bucket(BUCKET)
        store = Store(
            "gs",
            {"STORAGE_EMULATOR_HOST": endpoint},
            lambda key, data: bucket.blob(key).upload_from_string(data),
        )
        _upload_all(store, eunomia_parquet)
        yield store
    finally:
        _stop(proc)


# -- per-test environment ---------------------------------------------------------------------
_SDK_VARS = (
    "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_ACCOUNT_URL", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS", "FEDFLOW_STORAGE_CACHE",
)  # fmt: skip

STORE_FIXTURES = {"s3": "s3_store", "az": "azure_store", "gs": "gcs_store"}


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[Store], None]:
    """Apply a store's SDK environment for this test (undone afterwards)."""
    for name in _SDK_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    def apply(store: Store) -> None:
        for name, value in store.env.items():
            monkeypatch.setenv(name, value)

    return apply


@pytest.fixture
def get_store(
    request: pytest.FixtureRequest, store_env: Callable[[Store], None]
) -> Callable[[str], Store]:
    """``get_store("s3" | "az" | "gs")``: the running store, its environment applied."""

    def get(scheme: str) -> Store:
        store: Store = request.getfixturevalue(STORE_FIXTURES[scheme])
        store_env(store)
        return store

    return get


@pytest.fixture
def locate(eunomia_parquet: Path, get_store: Callable[[str], Store]) -> Callable[[str, str], Any]:
    """``locate(kind, prefix)``: the dataset location of ``prefix`` (kind ``local`` or a scheme)."""
    from executors.storage import open_location

    def open_(kind: str, prefix: str) -> Any:
        if kind == "local":
            return open_location(str(eunomia_parquet / prefix))
        return open_location(get_store(kind).url(prefix))

    return open_


@pytest.fixture
def eunomia_urls(
    request: pytest.FixtureRequest, eunomia_parquet: Path, store_env: Callable[[Store], None]
) -> dict[str, str]:
    """``{"local", "s3", "az", "gs": URL of the Eunomia tables}``, all four stores running."""
    urls = {"local": str(eunomia_parquet / "omop")}
    for scheme, fixture in STORE_FIXTURES.items():
        store: Store = request.getfixturevalue(fixture)
        store_env(store)
        urls[scheme] = store.url("omop")
    return urls
