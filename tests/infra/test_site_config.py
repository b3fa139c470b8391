"""The site modules' ``site_config`` output agrees with the site configuration schema and with
the resources the module creates.

Each site module builds ``local.site_config`` and renders it with ``yamlencode`` in its
``site_config`` output (and hands the same object to the running site). This test reads that
expression with python-hcl2, renders it with sample variable values (resource attributes become
recognisable placeholders), and checks the result three ways:

1. its key structure and value types against ``SITE_CONFIG_SCHEMA`` below (the shape
   ``fedflow site serve`` reads);
2. with ``executors.config.SiteConfig`` itself, the pydantic model the site loads;
3. against the module: datasets live in the module's data bucket, the audit location in its audit
   bucket, the site identity reads the one and may only write the other, the audit bucket is
   locked, the data bucket is versioned and encrypted with the customer-managed key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tfparse import SITE_MODULES, TerraformDir, parse_hcl

# The shape of a site configuration, as the issue states it. `audience` is added: SiteConfig has
# it (the federation's name, the token audience the site accepts) and a deployed site must set it.
SITE_CONFIG_SCHEMA = yaml.safe_load(
    """
site: eu-hospital
jurisdiction: EU
audience: fedflow
datasets:
  omop:
    location: s3://bucket/prefix
policy: policy.yaml
state_dir: /var/lib/fedflow
dask:
  scheduler_address: tcp://dask-scheduler:8786
  workers: 2
  threads_per_worker: 2
trusted_issuers:
  - issuer: https://issuer.example.org
    public_key: /etc/fedflow/issuer.pub.pem
service:
  host: 0.0.0.0
  port: 8443
  tls_cert: /etc/fedflow/tls/site.crt
  tls_key: /etc/fedflow/tls/site.key
  client_ca: /etc/fedflow/tls/orchestrator-ca.crt
audit:
  location: s3://audit-bucket/prefix
"""
)

# Values for the variables that have no default; variables with a default render with it.
SAMPLE_VARIABLES: dict[str, Any] = {
    "site_name": "test-site",
    "jurisdiction": "EU",
    "datasets": {"omop": "omop/v5.4", "genomics": "vcf/2024"},
    "trusted_issuers": [
        {"issuer": "https://issuer.example.org", "public_key_pem": "-----BEGIN PUBLIC KEY-----"},
        {"issuer": "https://other.example.org", "public_key_pem": "-----BEGIN PUBLIC KEY-----"},
    ],
}


@dataclass(frozen=True)
class Cloud:
    """What a site module's storage must look like on its cloud."""

    scheme: str
    data: tuple[str, ...]
    """Resources whose placeholders make up every dataset location."""
    audit: tuple[str, ...]
    """Resources whose placeholders make up the audit location."""


CLOUDS = {
    "aws-site": Cloud("s3", ("aws_s3_bucket.data",), ("aws_s3_bucket.audit",)),
    "azure-site": Cloud(
        "az",
        ("azurerm_storage_container.data", "azurerm_storage_account.data"),
        ("azurerm_storage_container.audit", "azurerm_storage_account.audit"),
    ),
    "gcp-site": Cloud("gs", ("google_storage_bucket.data",), ("google_storage_bucket.audit",)),
}

_REFERENCE = re.compile(r"^[A-Za-z_][\w-]*(?:\.[\w-]+|\[\d+\])*$")


def interpolations(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, expression)`` of each top-level ``${...}`` in a template, braces balanced."""
    found, i = [], 0
    while (i := text.find("${", i)) >= 0:
        depth, j = 1, i + 2
        while depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        found.append((i, j, text[i + 2 : j - 1]))
        i = j
    return found


def placeholder(resource: str) -> str:
    """The DNS-safe stand-in a resource attribute renders to (``aws_s3_bucket.data`` ->
    ``aws-s3-bucket-data``)."""
    return resource.replace("_", "-").replace(".", "-")


class Renderer:
    """Renders the small HCL subset site_config uses: literals, references, string templates
    and ``for`` expressions over variables. Anything else fails the test on purpose: the
    configuration must stay a plain, reviewable object."""

    def __init__(self, tf: TerraformDir, variables: dict[str, Any]) -> None:
        self.tf = tf
        self.variables = variables

    def render(self, value: Any, scope: dict[str, Any] | None = None) -> Any:
        scope = scope or {}
        if isinstance(value, dict):
            return {k: self.render(v, scope) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v, scope) for v in value]
        if not isinstance(value, str):
            return value
        parts = interpolations(value)
        if len(parts) == 1 and parts[0][:2] == (0, len(value)):
            return self.expression(parts[0][2].strip(), scope)
        out, last = [], 0
        for start, end, expr in parts:
            out += [value[last:start], str(self.expression(expr.strip(), scope))]
            last = end
        return "".join([*out, value[last:]])

    def expression(self, expr: str, scope: dict[str, Any]) -> Any:
        loop = re.fullmatch(
            r"([\[{])\s*for\s+(\w+)\s*,\s*(\w+)\s+in\s+(var\.\w+)\s*:\s*(.*?)\s*[\]}]", expr, re.S
        )
        if loop:
            opener, key_name, value_name, collection, body = loop.groups()
            items = self.reference(collection, scope)
            pairs = items.items() if isinstance(items, dict) else enumerate(items)
            if opener == "{":
                key_expr, _, value_expr = body.partition("=>")
                return {
                    self.render(
                        f"${{{key_expr.strip()}}}", {**scope, key_name: k, value_name: v}
                    ): self.object(value_expr, {**scope, key_name: k, value_name: v})
                    for k, v in pairs
                }
            return [self.object(body, {**scope, key_name: k, value_name: v}) for k, v in pairs]
        if _REFERENCE.fullmatch(expr):
            return self.reference(expr, scope)
        raise AssertionError(f"site_config uses an expression this test does not render: {expr}")

    def object(self, literal: str, scope: dict[str, Any]) -> Any:
        """An HCL object literal inside a for expression, parsed and rendered."""
        return self.render(parse_hcl(f"value = {literal.strip()}")["value"], scope)

    def reference(self, ref: str, scope: dict[str, Any]) -> Any:
        parts = [p for p in re.split(r"\.|\[(\d+)\]", ref) if p]
        head, rest = parts[0], parts[1:]
        if head in scope:
            value = scope[head]
        elif head == "var":
            name, rest = rest[0], rest[1:]
            variable = self.tf.variables[name]  # KeyError: an undeclared variable
            value = self.variables[name] if name in self.variables else variable["default"]
        elif head == "local":
            name, rest = rest[0], rest[1:]
            value = self.render(self.tf.locals[name])  # KeyError: an undeclared local
        else:
            resource = f"{head}.{rest[0]}"
            assert resource in self.tf.resources, f"site_config names {resource}, not declared"
            return placeholder(resource)
        for part in rest:
            value = value[int(part)] if isinstance(value, list) else value[part]
        return value


def site_config_expression(tf: TerraformDir) -> Any:
    """The object the ``site_config`` output yamlencodes (inline, or a local it names)."""
    value = tf.outputs["site_config"]["value"]
    match = re.fullmatch(r"\$\{yamlencode\((.*)\)\}", value, re.S)
    assert match, f"the site_config output must be yamlencode(...), found {value}"
    argument = match.group(1).strip()
    if argument.startswith("local."):
        return tf.locals[argument.removeprefix("local.")]
    return parse_hcl(f"value = {argument}")["value"]


def rendered(tf: TerraformDir) -> dict[str, Any]:
    return Renderer(tf, SAMPLE_VARIABLES).render(site_config_expression(tf))


def assert_same_shape(actual: Any, schema: Any, where: str = "site_config") -> None:
    """Same keys at every fixed-key level, same value types; datasets and lists by element."""
    if isinstance(schema, dict):
        assert isinstance(actual, dict), f"{where} must be a mapping"
        if where == "site_config.datasets":
            (entry,) = schema.values()
            assert actual, f"{where} is empty"
            for name, value in actual.items():
                assert_same_shape(value, entry, f"{where}.{name}")
            return
        assert set(actual) == set(schema), (
            f"{where}: keys {sorted(actual)} differ from the schema's {sorted(schema)}"
        )
        for key, value in schema.items():
            assert_same_shape(actual[key], value, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(actual, list) and actual, f"{where} must be a non-empty list"
        for i, item in enumerate(actual):
            assert_same_shape(item, schema[0], f"{where}[{i}]")
    else:
        assert type(actual) is type(schema), (
            f"{where} is {type(actual).__name__}, the schema has {type(schema).__name__}"
        )


@pytest.fixture(params=SITE_MODULES)
def site(request: pytest.FixtureRequest, terraform: dict[str, TerraformDir]) -> TerraformDir:
    return terraform[f"modules/{request.param}"]


def cloud_of(site: TerraformDir) -> Cloud:
    return CLOUDS[site.path.name]


def test_site_config_has_the_schema_shape(site: TerraformDir) -> None:
    assert_same_shape(rendered(site), SITE_CONFIG_SCHEMA)


def test_site_config_loads_as_a_site_config(site: TerraformDir) -> None:
    config_module = pytest.importorskip("executors.config")
    config = config_module.SiteConfig.parse(
        rendered(site), base=Path("/etc/fedflow"), source=site.path.name
    )
    assert config.site == SAMPLE_VARIABLES["site_name"]
    assert set(config.datasets) == set(SAMPLE_VARIABLES["datasets"])
    assert config.service is not None and config.service.tls_cert is not None


def test_site_config_takes_its_values_from_the_variables(site: TerraformDir) -> None:
    config = rendered(site)
    assert config["site"] == SAMPLE_VARIABLES["site_name"]
    assert config["jurisdiction"] == SAMPLE_VARIABLES["jurisdiction"]
    assert config["audience"] == site.variables["audience"]["default"]
    assert config["dask"]["workers"] == site.variables["dask_workers"]["default"]
    threads = site.variables["dask_threads_per_worker"]["default"]
    assert config["dask"]["threads_per_worker"] == threads
    assert config["service"]["port"] == site.variables["service_port"]["default"]
    issuers = [t["issuer"] for t in config["trusted_issuers"]]
    assert issuers == [t["issuer"] for t in SAMPLE_VARIABLES["trusted_issuers"]]
    keys = [t["public_key"] for t in config["trusted_issuers"]]
    assert len(set(keys)) == len(keys), "each trusted issuer needs its own public key file"


def test_site_config_paths_are_where_the_deployment_puts_them(site: TerraformDir) -> None:
    config = rendered(site)
    for path in (
        config["state_dir"],
        config["service"]["tls_cert"],
        config["service"]["tls_key"],
        config["service"]["client_ca"],
        *(t["public_key"] for t in config["trusted_issuers"]),
    ):
        assert path.startswith("/"), f"{path} must be absolute inside the container"
    assert not config["policy"].startswith("/"), "policy is relative to the config file"
    assert re.fullmatch(r"tcp://[a-z0-9.-]+:8786", config["dask"]["scheduler_address"])


def test_datasets_live_in_the_data_bucket(site: TerraformDir) -> None:
    cloud = cloud_of(site)
    datasets = rendered(site)["datasets"]
    assert set(datasets) == set(SAMPLE_VARIABLES["datasets"])
    for name, prefix in SAMPLE_VARIABLES["datasets"].items():
        location = datasets[name]["location"]
        assert location.startswith(f"{cloud.scheme}://"), location
        assert location.endswith(f"/{prefix}"), location
        for resource in cloud.data:
            assert placeholder(resource) in location, f"{location} does not name {resource}"
        for resource in cloud.audit:
            assert placeholder(resource) not in location, f"{location} names {resource}"


def test_audit_location_is_the_audit_bucket(site: TerraformDir) -> None:
    cloud = cloud_of(site)
    location = rendered(site)["audit"]["location"]
    assert location.startswith(f"{cloud.scheme}://"), location
    for resource in cloud.audit:
        assert placeholder(resource) in location, f"{location} does not name {resource}"
    for resource in cloud.data:
        assert placeholder(resource) not in location, f"{location} names {resource}"


SITE_YAML = "${yamlencode(local.site_config)}"


def serve_command(container: dict[str, Any]) -> list[str]:
    command = container["command"]
    assert command[:3] == ["fedflow", "site", "serve"], command
    return list(command)


def test_aws_site_task_reads_the_rendered_config(terraform: dict[str, TerraformDir]) -> None:
    tf = terraform["modules/aws-site"]
    # The config container writes FEDFLOW_CONFIG_FILES, whose site.yaml is the rendered object,
    # into the volume the site container mounts and serves from.
    assert '"site.yaml" = yamlencode(local.site_config)' in tf.locals["config_files"]
    definitions = tf.resources["aws_ecs_task_definition.site"]["container_definitions"]
    assert "value = jsonencode(local.config_files)" in definitions
    assert (
        'command = ["fedflow", "site", "serve", "--config", "${local.config_dir}/site.yaml"]'
        in (definitions)
    )
    assert definitions.count('sourceVolume = "config", containerPath = local.config_dir') == 2


def test_azure_site_app_reads_the_rendered_config(terraform: dict[str, TerraformDir]) -> None:
    tf = terraform["modules/azure-site"]
    app = tf.resources["azurerm_container_app.site"]
    secrets = {s["name"]: s for s in app["secret"]}
    assert secrets["${local.files.config}"]["value"] == SITE_YAML
    container = app["template"][0]["container"][0]
    command = serve_command(container)
    assert command[3:] == ["--config", "${local.config_dir}/${local.files.config}"]
    volumes = {v["name"]: v for v in app["template"][0]["volume"]}
    mounts = {m["name"]: m["path"] for m in container["volume_mounts"]}
    assert volumes["config"]["storage_type"] == "Secret"
    assert mounts["config"] == "${local.config_dir}"


def test_gcp_site_pod_reads_the_rendered_config(terraform: dict[str, TerraformDir]) -> None:
    tf = terraform["modules/gcp-site"]
    config_map = tf.resources["kubernetes_config_map_v1.site"]
    assert '"site.yaml" = yamlencode(local.site_config)' in config_map["data"]
    pod = tf.resources["kubernetes_deployment_v1.site"]["spec"][0]["template"][0]["spec"][0]
    container = pod["container"][0]
    assert serve_command(container)[3:] == ["--config", "${local.config_dir}/site.yaml"]
    mounts = {m["name"]: m["mount_path"] for m in container["volume_mount"]}
    volumes = {v["name"]: v for v in pod["volume"]}
    assert mounts["config"] == "${local.config_dir}"
    assert "kubernetes_config_map_v1.site" in volumes["config"]["config_map"][0]["name"]


# --- the storage and identities the configuration points at ---------------------------------------


def test_aws_buckets_and_roles(terraform: dict[str, TerraformDir]) -> None:
    tf = terraform["modules/aws-site"]
    r = tf.resources
    lock = r["aws_s3_bucket_object_lock_configuration.audit"]
    assert "aws_s3_bucket.audit" in lock["bucket"]
    assert lock["rule"][0]["default_retention"][0]["mode"] == "COMPLIANCE"
    assert r["aws_s3_bucket.audit"]["object_lock_enabled"] is True
    assert r["aws_s3_bucket_versioning.data"]["versioning_configuration"][0]["status"] == "Enabled"
    sse = r["aws_s3_bucket_server_side_encryption_configuration.data"]["rule"][0]
    default = sse["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] == "aws:kms" and "aws_kms_key." in default["kms_master_key_id"]
    block = r["aws_s3_bucket_public_access_block.data"]
    assert all(
        block[k] is True
        for k in (
            "block_public_acls",
            "block_public_policy",
            "ignore_public_acls",
            "restrict_public_buckets",
        )
    )
    read = tf.data["aws_iam_policy_document.read_data"]
    write = tf.data["aws_iam_policy_document.write_audit"]
    assert "aws_s3_bucket.audit" not in str(read) and "aws_s3_bucket.data" in str(read)
    assert "aws_s3_bucket.data" not in str(write) and "aws_s3_bucket.audit" in str(write)
    s3_actions = [a for s in write["statement"] for a in s["actions"] if a.startswith("s3:")]
    assert s3_actions == ["s3:PutObject"], "the site writes audit objects, nothing else"
    site_policies = {
        k
        for k, v in r.items()
        if k.startswith("aws_iam_role_policy.") and "aws_iam_role.site." in v["role"]
    }
    assert site_policies == {
        "aws_iam_role_policy.site_read_data",
        "aws_iam_role_policy.site_write_audit",
    }


def test_aws_state_dir_is_persistent(terraform: dict[str, TerraformDir]) -> None:
    r = terraform["modules/aws-site"].resources
    volumes = {v["name"]: v for v in r["aws_ecs_task_definition.site"]["volume"]}
    efs = volumes["state"]["efs_volume_configuration"][0]
    assert "aws_efs_file_system.state" in efs["file_system_id"]
    assert efs["transit_encryption"] == "ENABLED"
    assert r["aws_efs_file_system.state"]["encrypted"] is True
    service = r["aws_ecs_service.site"]
    assert service["desired_count"] == 1 and service["deployment_maximum_percent"] == 100


def test_gcp_state_dir_is_persistent(terraform: dict[str, TerraformDir]) -> None:
    r = terraform["modules/gcp-site"].resources
    spec = r["kubernetes_deployment_v1.site"]["spec"][0]
    assert spec["strategy"][0]["type"] == "Recreate", "one writer of the audit chain at a time"
    pod = spec["template"][0]["spec"][0]
    volumes = {v["name"]: v for v in pod["volume"]}
    claim = volumes["state"]["persistent_volume_claim"][0]["claim_name"]
    assert "kubernetes_persistent_volume_claim_v1.state" in claim
    mounts = {m["name"]: m["mount_path"] for m in pod["container"][0]["volume_mount"]}
    assert mounts["state"] == "${local.state_dir}"


def test_azure_storage_and_roles(terraform: dict[str, TerraformDir]) -> None:
    r = terraform["modules/azure-site"].resources
    data, audit = r["azurerm_storage_account.data"], r["azurerm_storage_account.audit"]
    assert audit["immutability_policy"][0]["period_since_creation_in_days"]
    for account in (data, audit):
        assert account["customer_managed_key"], "storage must use the customer-managed key"
        assert account["public_network_access_enabled"] is False
        assert account["allow_nested_items_to_be_public"] is False
        assert account["blob_properties"][0]["versioning_enabled"] is True
    reads = r["azurerm_role_assignment.site_reads_data"]
    assert "azurerm_storage_container.data" in reads["scope"]
    assert reads["role_definition_name"] == "Storage Blob Data Reader"
    appends = r["azurerm_role_assignment.site_appends_audit"]
    assert "azurerm_storage_container.audit" in appends["scope"]
    assert "azurerm_role_definition.audit_appender" in appends["role_definition_id"]
    actions = r["azurerm_role_definition.audit_appender"]["permissions"][0]["data_actions"]
    assert not [a for a in actions if a.endswith(("/read", "/delete"))], actions


def test_gcp_buckets_and_roles(terraform: dict[str, TerraformDir]) -> None:
    r = terraform["modules/gcp-site"].resources
    assert r["google_storage_bucket.audit"]["retention_policy"][0]["retention_period"]
    data = r["google_storage_bucket.data"]
    assert data["versioning"][0]["enabled"] is True
    assert "google_kms_crypto_key." in data["encryption"][0]["default_kms_key_name"]
    for bucket in ("data", "audit"):
        assert r[f"google_storage_bucket.{bucket}"]["public_access_prevention"] == "enforced"
    reads = r["google_storage_bucket_iam_member.site_reads_data"]
    assert "google_storage_bucket.data" in reads["bucket"]
    assert reads["role"] == "roles/storage.objectViewer"
    appends = r["google_storage_bucket_iam_member.site_appends_audit"]
    assert "google_storage_bucket.audit" in appends["bucket"]
    assert appends["role"] == "roles/storage.objectCreator"
    site_sa = "google_service_account.site."
    site_grants = {k for k, v in r.items() if site_sa in str(v.get("member"))}
    assert site_grants == {
        "google_storage_bucket_iam_member.site_reads_data",
        "google_storage_bucket_iam_member.site_appends_audit",
    }
