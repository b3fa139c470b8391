"""``fedflow keys`` and ``fedflow token``: make a key, issue a token, inspect it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from fedflow.cli.identity import keys_app, token_app

ISSUER = "https://aai.example.org"
runner = CliRunner()


def _keys(tmp_path: Path, name: str = "demo") -> tuple[Path, Path]:
    result = runner.invoke(keys_app, ["issuer", name, "--issuer", ISSUER, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    return tmp_path / f"{name}.key.pem", tmp_path / f"{name}.pub.pem"


def _issue(key: Path, *extra: str) -> str:
    args = ["issue", "--key", str(key), "--issuer", ISSUER, "--researcher", "alice"]
    args += ["--project", "gi-bleed", "--purpose", "research", "--audience", "site-eu", *extra]
    result = runner.invoke(token_app, args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def _inspect(token: str, public: Path, audience: str = "site-eu") -> tuple[int, str, str]:
    args = ["inspect", token, "--trusted-key", str(public), "--issuer", ISSUER]
    result = runner.invoke(token_app, [*args, "--audience", audience])
    return result.exit_code, result.stdout, result.stderr


def test_keys_issue_and_inspect(tmp_path: Path) -> None:
    private, public = _keys(tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and public.exists()
    token = _issue(private, "--ttl", "120")
    assert token.count(".") == 2
    code, out, _ = _inspect(token, public)
    assert code == 0
    claims = json.loads(out)
    assert claims["researcher"] == "alice" and claims["project"] == "gi-bleed"
    assert claims["purpose"] == "research" and claims["audience"] == "site-eu"
    assert claims["issuer"] == ISSUER


def test_inspect_rejects_with_the_reason(tmp_path: Path) -> None:
    private, public = _keys(tmp_path)
    _, other_public = _keys(tmp_path, "other")
    token = _issue(private)
    code, out, err = _inspect(token, public, audience="site-us")
    assert code == 1 and "wrong_audience" in err and out == ""
    code, _, err = _inspect(token, other_public)
    assert code == 1 and "bad_signature" in err
    assert token not in err
    code, _, err = _inspect("not-a-token", public)
    assert code == 1 and "malformed" in err


def test_a_bad_key_file_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("nope")
    args = ["issue", "--key", str(junk), "--issuer", ISSUER, "--researcher", "a"]
    result = runner.invoke(
        token_app, [*args, "--project", "p", "--purpose", "u", "--audience", "s"]
    )
    assert result.exit_code == 2
    assert "cannot read issuer key" in result.stderr


def test_mint_a_visa_and_carry_it_in_a_token(tmp_path: Path) -> None:
    from governance.identity import TrustedIssuer, verify_token
    from governance.passport import PassportPolicy, VisaIssuer, verify_passport

    private, public = _keys(tmp_path)
    dac_private, dac_public = _keys(tmp_path, "dac")
    args = ["visa", "--key", str(dac_private), "--issuer", ISSUER, "--researcher", "alice"]
    args += ["--type", "ControlledAccessGrants", "--value", "https://dac/ds/1", "--by", "dac"]
    result = runner.invoke(token_app, args)
    assert result.exit_code == 0, result.output
    visa = result.stdout.strip()
    token = _issue(private, "--visa", visa)
    code, out, _ = _inspect(token, public)
    assert code == 0 and json.loads(out)["passport"] == 1
    identity = verify_token(
        token, trusted=[TrustedIssuer.from_file(ISSUER, public)], audience="site-eu"
    )
    rules = PassportPolicy(
        visa_issuers=[VisaIssuer(issuer=ISSUER, public_key_pem=dac_public.read_text())]
    )
    passport = verify_passport(identity.passport, policy=rules, subject="alice")
    assert passport.grants == {"https://dac/ds/1"} and not passport.problems
    bad = runner.invoke(token_app, [*args[:-4], "--type", "Nonsense", "--value", "x"])
    assert bad.exit_code == 2 and "--type must be one of" in bad.stderr
