"""``fedflow keys`` and ``fedflow token``: issuer keys, researcher tokens and GA4GH visas for
the demo and tests."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from governance.errors import GovernanceError, TokenRejected
from governance.identity import IssuerKey, TrustedIssuer, issue_token, verify_token
from governance.passport import VISA_BY, VISA_TYPES, issue_visa

__all__ = ["keys_app", "token_app"]

keys_app = typer.Typer(help="Make issuer signing keys.", no_args_is_help=True)
token_app = typer.Typer(help="Issue and inspect researcher tokens.", no_args_is_help=True)


@keys_app.callback()
def _keys() -> None:
    """Make issuer signing keys."""


_ISSUER = Annotated[str, typer.Option("--issuer", help="The issuer URL (the token's iss).")]


@keys_app.command("issuer")
def make_issuer(
    name: Annotated[str, typer.Argument(help="File stem: NAME.key.pem and NAME.pub.pem.")],
    issuer: _ISSUER,
    out: Annotated[Path, typer.Option("--out", help="Directory to write the keys to.")],
) -> None:
    """Generate an Ed25519 issuer key pair (the private key is written with mode 0600)."""
    private_path, public_path = IssuerKey.generate(issuer).save(out, name)
    typer.echo(f"private key: {private_path}")
    typer.echo(f"public key:  {public_path}  (give this to the sites that trust {issuer})")


@token_app.command("issue")
def issue(
    key: Annotated[
        Path, typer.Option("--key", help="The issuer's private key.", exists=True, dir_okay=False)
    ],
    issuer: _ISSUER,
    researcher: Annotated[str, typer.Option("--researcher", help="Who (the token's sub).")],
    project: Annotated[str, typer.Option("--project", help="The approved project.")],
    purpose: Annotated[str, typer.Option("--purpose", help="The purpose of use.")],
    audience: Annotated[str, typer.Option("--audience", help="The site or federation.")],
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Lifetime in seconds.")] = 3600,
    visa: Annotated[
        list[str] | None,
        typer.Option("--visa", help="A visa (from `fedflow token visa`) to carry; repeatable."),
    ] = None,
) -> None:
    """Sign a researcher token (with GA4GH Passport visas, if given) and print it."""
    try:
        signing_key = IssuerKey.load(key, issuer)
    except GovernanceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    token = issue_token(
        signing_key,
        researcher=researcher,
        project=project,
        purpose=purpose,
        audience=audience,
        ttl=timedelta(seconds=ttl),
        visas=[v.strip() for v in visa or []],
    )
    typer.echo(token)


@token_app.command("visa")
def visa(
    key: Annotated[
        Path,
        typer.Option("--key", help="The visa issuer's private key.", exists=True, dir_okay=False),
    ],
    issuer: _ISSUER,
    researcher: Annotated[str, typer.Option("--researcher", help="Who (the visa's sub).")],
    kind: Annotated[
        str,
        typer.Option(
            "--type",
            help="ControlledAccessGrants, AcceptedTermsAndPolicies, ResearcherStatus, ...",
        ),
    ],
    value: Annotated[str, typer.Option("--value", help="Dataset URL/id, terms URL, status.")],
    source: Annotated[
        str | None, typer.Option("--source", help="Who made the assertion (default: issuer).")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="dac, so, system, peer or self.")] = "dac",
    asserted_days_ago: Annotated[
        int, typer.Option("--asserted-days-ago", min=0, help="When it was asserted.")
    ] = 0,
    ttl_days: Annotated[int, typer.Option("--ttl-days", min=1, help="Lifetime in days.")] = 365,
) -> None:
    """Sign a GA4GH Passport v1.2 visa and print it (give it to `token issue --visa`)."""
    if kind not in VISA_TYPES or by not in VISA_BY:
        typer.echo(
            f"error: --type must be one of {sorted(VISA_TYPES)}, --by one of {sorted(VISA_BY)}",
            err=True,
        )
        raise typer.Exit(2)
    try:
        signing_key = IssuerKey.load(key, issuer)
    except GovernanceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    now = datetime.now(UTC)
    typer.echo(
        issue_visa(
            signing_key,
            researcher=researcher,
            type=kind,
            value=value,
            source=source or issuer,
            by=by,
            asserted=now - timedelta(days=asserted_days_ago),
            ttl=timedelta(days=ttl_days),
            now=now,
        )
    )


@token_app.command("inspect")
def inspect(
    token: Annotated[str, typer.Argument(help="The token to verify.")],
    trusted_key: Annotated[
        Path,
        typer.Option("--trusted-key", help="The issuer's public key.", exists=True, dir_okay=False),
    ],
    issuer: _ISSUER,
    audience: Annotated[str, typer.Option("--audience", help="Who is verifying.")],
) -> None:
    """Verify a token as a site would and print its claims as JSON; exit 1 if rejected."""
    try:
        trusted = [TrustedIssuer.from_file(issuer, trusted_key)]
        identity = verify_token(token, trusted=trusted, audience=audience)
    except TokenRejected as exc:
        typer.echo(f"rejected ({exc.reason}): {exc}", err=True)
        raise typer.Exit(1) from None
    except GovernanceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    claims = asdict(identity)
    claims["expires_at"] = identity.expires_at.isoformat()
    # The visas are verified by each site against its own trusted visa issuers: count them.
    claims["passport"] = len(identity.passport)
    typer.echo(json.dumps(claims, indent=2))
