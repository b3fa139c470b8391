"""The init containers' Python scripts (aws-site `config`, orchestrator `identity`) run and write
the files the site and the flow worker read, readable by their owner only.

The scripts live in the modules as lists of lines joined by newlines; this test takes them from
the parsed HCL, points the config folder at a temporary one and runs them with the environment
the task definitions give them.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

from tfparse import TerraformDir


def script(tf: TerraformDir, local: str, config_dir: Path) -> str:
    expression = tf.locals[local]
    assert expression.startswith('${join("\\n", ['), f"{local} is not a list of lines"
    lines = re.findall(r'"((?:[^"\\]|\\.)*)"', expression[expression.index("[") :])
    code = "\n".join(json.loads(f'"{line}"') for line in lines)
    return code.replace("${local.config_dir}", str(config_dir))


def run(code: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def test_site_config_container_writes_every_file(
    terraform: dict[str, TerraformDir], tmp_path: Path
) -> None:
    files = {"site.yaml": "site: x\n", "policy.yaml": "rules: []\n", "issuers/0.pub.pem": "PEM"}
    run(
        script(terraform["modules/aws-site"], "write_config", tmp_path),
        {
            "FEDFLOW_CONFIG_FILES": json.dumps(files),
            "TLS_SITE_CRT": "crt",
            "TLS_SITE_KEY": "key",
            "TLS_ORCHESTRATOR_CA": "ca",
        },
    )
    expected = {
        **files,
        "tls/site.crt": "crt",
        "tls/site.key": "key",
        "tls/orchestrator-ca.crt": "ca",
    }
    for name, text in expected.items():
        path = tmp_path / name
        assert path.read_text() == text
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{name} is readable by others"


def test_orchestrator_identity_container_writes_the_identity(
    terraform: dict[str, TerraformDir], tmp_path: Path
) -> None:
    env = {
        "CLIENT_CRT": "crt",
        "CLIENT_KEY": "key",
        "SITES_CA_CRT": "ca",
        "CHECKPOINT_SIGNING_KEY": "signing",
    }
    run(script(terraform["modules/orchestrator"], "write_identity", tmp_path), env)
    written = {p.name: p.read_text() for p in (tmp_path / "identity").iterdir()}
    assert written == {
        "client.crt": "crt",
        "client.key": "key",
        "sites-ca.crt": "ca",
        "checkpoint-signing.key": "signing",
    }
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "identity").iterdir()}
    assert modes == {0o600}
