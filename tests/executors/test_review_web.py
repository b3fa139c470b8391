"""The custodian review page: accounts, sign-in, CSRF, lockout, bad input, and a real browser.

The unit tests drive the page with Starlette's TestClient over a review queue holding one
result filed by hand. The acceptance test runs a flow over an in-process site that holds
``cohort_count`` results for review, serves the page on loopback, and approves
the held output in headless Chromium while the flow waits.
"""

from __future__ import annotations

import contextvars
import re
import stat
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
import yaml
from argon2 import PasswordHasher
from pydantic import ValidationError
from starlette.testclient import TestClient
from typer.testing import CliRunner

from executors.config import ReviewPageConfig, SiteConfig
from executors.errors import SiteUnavailable
from executors.review_web import ReviewPageServer, create_review_app
from executors.webusers import InvalidWebUser, UnknownWebUser, WebUserExists, WebUsers
from fedflow.cli.site import app as site_cli
from fedflow.core import ConfigError, digest_bytes, to_ipc
from governance.audit import AuditLog
from governance.review import ReviewItem, ReviewQueue, ReviewState

# Argon2 at its lowest cost keeps the tests fast; the page itself uses argon2-cffi's defaults.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
PASSWORD = "correct horse battery"
JOB = "a" * 32
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Clock:
    """A monotonic clock the test moves forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def site(tmp_path: Path) -> SiteConfig:
    raw = {
        "site": "site-a",
        "datasets": {"omop": {"location": "omop"}},
        "policy": "policy.yaml",
        "state_dir": "state",
        "review_page": {"max_failures": 3, "session_minutes": 10, "lockout_minutes": 5},
    }
    return SiteConfig.parse(raw, base=tmp_path)


def hold(site: SiteConfig, job_id: str = JOB) -> None:
    """File a held frequency table (one cell suppressed) as the airlock would."""
    ipc = to_ipc(pa.table({"gender": ["F", "M"], "count": [412, None]}))
    item = ReviewItem(
        *(job_id, site.site, "req-1", "cohort_count", "frequency", "omop"),
        *("proj-7", "alice@uni.example", "research", "released_with_suppression", 1),
        reasons=("1 cells below the threshold of 10 suppressed",),
        result=ipc,
        result_digest=digest_bytes(ipc),
        created_at="2026-11-28T10:00:00+00:00",
    )
    queue = ReviewQueue(site.state_dir / "review.db")
    try:
        queue.hold(item)
    finally:
        queue.close()


def audit_entries(site: SiteConfig, prefix: str = "review") -> list[Any]:
    with AuditLog(site.state_dir / "audit.db", site=site.site) as log:
        assert log.verify().ok
        return [e for e in log.entries() if e.event.startswith(prefix)]


@pytest.fixture
def page(site: SiteConfig):  # type: ignore[no-untyped-def]
    """(client, clock, site) over the site's page, with user carol and one held result."""
    users = WebUsers(site.review_users(), hasher=CHEAP)
    users.add("carol", PASSWORD)
    hold(site)
    clock = Clock()
    app = create_review_app(site, users=users, clock=clock)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, clock, site


def sign_in(client: TestClient, user: str = "carol", password: str = PASSWORD) -> Any:
    match = CSRF.search(client.get("/signin").text)
    assert match
    return client.post(
        "/signin",
        data={"csrf": match.group(1), "username": user, "password": password},
        follow_redirects=False,
    )


def csrf_of(client: TestClient, path: str) -> str:
    match = CSRF.search(client.get(path).text)
    assert match, path
    return match.group(1)


# -- accounts ------------------------------------------------------------------------------


def test_users_file_holds_argon2_hashes_only_and_enforces_the_rules(tmp_path: Path) -> None:
    users = WebUsers(tmp_path / "users.json", hasher=CHEAP)
    users.add("carol", PASSWORD)
    text = users.path.read_text()
    assert PASSWORD not in text and "$argon2id$" in text
    assert stat.S_IMODE(users.path.stat().st_mode) == 0o600
    assert users.verify("carol", PASSWORD)
    assert not users.verify("carol", PASSWORD + "!")
    assert not users.verify("mallory", PASSWORD)
    with pytest.raises(WebUserExists):
        users.add("carol", "another long password")
    for name, password in (("Carol Smith", PASSWORD), ("dave", "short"), ("erin", " " + PASSWORD)):
        with pytest.raises(InvalidWebUser) as caught:
            users.add(name, password)
        assert password not in str(caught.value)
    # Another process's change is seen: a second reader, then removal.
    other = WebUsers(users.path, hasher=CHEAP)
    other.add("carol", "a new long password", replace=True)
    assert users.verify("carol", "a new long password") and not users.verify("carol", PASSWORD)
    other.remove("carol")
    assert users.names() == []
    with pytest.raises(UnknownWebUser):
        users.remove("carol")


def test_user_commands_read_the_password_from_stdin_and_audit(site: SiteConfig, tmp_path: Path):  # type: ignore[no-untyped-def]
    config = tmp_path / "site.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "site": "site-a",
                "datasets": {"omop": {"location": "omop"}},
                "policy": "policy.yaml",
                "state_dir": "state",
            }
        )
    )
    runner = CliRunner()
    added = runner.invoke(
        site_cli,
        ["user", "add", "--config", str(config), "--password-stdin", "dave"],
        input=PASSWORD + "\n",
    )
    assert added.exit_code == 0, added.output
    listed = runner.invoke(site_cli, ["user", "list", "--config", str(config)])
    assert listed.output.split() == ["dave"]
    assert WebUsers(site.review_users()).verify("dave", PASSWORD)
    again = runner.invoke(
        site_cli,
        ["user", "add", "--config", str(config), "--password-stdin", "dave"],
        input=PASSWORD + "\n",
    )
    assert again.exit_code == 2 and "already exists" in again.output
    removed = runner.invoke(site_cli, ["user", "remove", "--config", str(config), "dave"])
    assert removed.exit_code == 0, removed.output
    events = [(e.event, e.details["user"]) for e in audit_entries(site)]
    assert events == [("review_page.user_added", "dave"), ("review_page.user_removed", "dave")]


def test_the_page_needs_tls_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loopback host only"):
        SiteConfig.parse(
            {
                "site": "s",
                "datasets": {"o": {"location": "o"}},
                "policy": "p",
                "state_dir": "s",
                "review_page": {"host": "0.0.0.0"},
            },
            base=tmp_path,
        )
    with pytest.raises(ValidationError, match="go together"):
        ReviewPageConfig.model_validate({"tls_cert": "c.pem"})
    assert ReviewPageConfig(host="::1").host == "::1"
    assert ReviewPageConfig(host="0.0.0.0", tls_cert=Path("c"), tls_key=Path("k")).tls


# -- sign-in, sessions, CSRF, lockout ------------------------------------------------------


def test_sign_in_sets_a_strict_httponly_cookie_and_is_audited_without_the_password(page):  # type: ignore[no-untyped-def]
    client, _, site = page
    assert client.get("/reviews", follow_redirects=False).headers["location"] == "/signin"
    wrong = sign_in(client, password="not the password")
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    response = sign_in(client)
    assert response.status_code == 303 and response.headers["location"] == "/reviews"
    cookie = response.headers["set-cookie"]
    assert "fedflow_review=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    listing = client.get("/reviews")
    assert "cohort_count" in listing.text and "alice@uni.example" in listing.text
    assert "default-src 'none'" in listing.headers["content-security-policy"]
    entries = audit_entries(site)
    assert [(e.event, e.actor, e.details["outcome"]) for e in entries] == [
        ("review_page.signin", "carol", "failure"),
        ("review_page.signin", "carol", "success"),
    ]
    assert all("not the password" not in str(e) and PASSWORD not in str(e) for e in entries)


def test_repeated_failures_lock_the_account_until_the_window_passes(page):  # type: ignore[no-untyped-def]
    client, clock, site = page
    for _ in range(3):
        assert sign_in(client, password="guess " * 3).status_code == 401
    locked = sign_in(client)  # the right password no longer helps
    assert locked.status_code == 429 and "locked" in locked.text
    clock.now += 5 * 60 + 1
    assert sign_in(client).status_code == 303
    outcomes = [e.details["outcome"] for e in audit_entries(site)]
    assert outcomes == ["failure"] * 3 + ["locked", "success"]


def test_forms_without_the_csrf_token_are_refused_and_audited(page):  # type: ignore[no-untyped-def]
    client, _, site = page
    no_token = client.post("/signin", data={"username": "carol", "password": PASSWORD})
    assert no_token.status_code == 403
    sign_in(client)
    forged = client.post(f"/reviews/{JOB}/decide", data={"action": "approve", "csrf": "forged"})
    assert forged.status_code == 403 and "Nothing was changed" in forged.text
    queue = ReviewQueue(site.state_dir / "review.db")
    try:
        assert queue.get(JOB).state is ReviewState.PENDING
    finally:
        queue.close()
    refused = [e for e in audit_entries(site) if e.event == "review_page.refused"]
    assert [(e.actor, e.details["error"]) for e in refused] == [
        ("anonymous", "CsrfRejected"),
        ("carol", "CsrfRejected"),
    ]


def test_sessions_end_on_expiry_sign_out_and_removal(page):  # type: ignore[no-untyped-def]
    client, clock, site = page
    sign_in(client)
    token = csrf_of(client, "/reviews")
    clock.now += 10 * 60 + 1
    late = client.post(f"/reviews/{JOB}/decide", data={"action": "approve", "csrf": token})
    assert late.status_code == 401 and "sign in again" in late.text
    expired = client.get("/reviews", follow_redirects=False)
    assert expired.headers["location"] == "/signin?m=expired"

    sign_in(client)
    cookie = client.cookies.get("fedflow_review")
    signed_out = client.post("/signout", data={"csrf": csrf_of(client, "/reviews")})
    assert "You have signed out" in signed_out.text
    client.cookies.set("fedflow_review", cookie)  # a copied cookie is dead too
    assert client.get("/reviews", follow_redirects=False).status_code == 303

    sign_in(client)
    WebUsers(site.review_users(), hasher=CHEAP).remove("carol")
    assert client.get("/reviews", follow_redirects=False).status_code == 303
    events = [(e.event, e.details.get("error")) for e in audit_entries(site)]
    assert ("review_page.signout", None) in events
    assert events.count(("review_page.refused", "SessionEnded")) == 4


def test_bad_input_gets_an_error_page_and_is_audited(page):  # type: ignore[no-untyped-def]
    client, _, site = page
    sign_in(client)
    token = csrf_of(client, f"/reviews/{JOB}")
    unknown = client.get(f"/reviews/{'b' * 32}")
    assert unknown.status_code == 404 and "No such held output" in unknown.text
    huge = client.post(f"/reviews/{JOB}/decide", data={"csrf": token, "reason": "x" * 20_000})
    assert huge.status_code == 413
    no_reason = client.post(f"/reviews/{JOB}/decide", data={"csrf": token, "action": "reject"})
    assert no_reason.status_code == 422 and "needs a reason" in no_reason.text
    approved = client.post(f"/reviews/{JOB}/decide", data={"csrf": token, "action": "approve"})
    assert approved.status_code == 200 and "Approved by" in approved.text
    twice = client.post(
        f"/reviews/{JOB}/decide",
        data={"csrf": token, "action": "reject", "reason": "second thoughts"},
    )
    assert twice.status_code == 409 and "already approved by carol" in twice.text
    page_errors = [e.details["error"] for e in audit_entries(site, "review_page.refused")]
    assert page_errors == ["ReviewNotFound", "PayloadTooLarge"]
    review_errors = [e.details["error"] for e in audit_entries(site, "review.refused")]
    assert review_errors == ["ReviewInvalid", "ReviewAlreadyDecided"]


def test_reject_records_the_reason_and_the_reviewer_escaped(page):  # type: ignore[no-untyped-def]
    client, _, site = page
    sign_in(client)
    shown = client.get(f"/reviews/{JOB}")
    assert "1 cells below the threshold of 10 suppressed" in shown.text
    assert '<td class="suppressed">suppressed</td>' in shown.text and "<td>412</td>" in shown.text
    reason = "<script>alert(1)</script> too close to last week's query"
    token = CSRF.search(shown.text).group(1)
    done = client.post(
        f"/reviews/{JOB}/decide", data={"csrf": token, "action": "reject", "reason": reason}
    )
    assert done.status_code == 200 and "Rejected by <strong>carol</strong>" in done.text
    assert "<script>" not in done.text and "&lt;script&gt;" in done.text
    (rejected,) = audit_entries(site, "review.rejected")
    assert (rejected.actor, rejected.details["reason"]) == ("carol", reason)


# -- acceptance: a real browser approves a held output while a flow waits --------------------

GI_BLEED = {"domain": "condition", "concept_ids": [192671], "include_descendants": True}


@pytest.fixture
def reviewing_federation(make_federation) -> tuple[Path, SiteConfig]:  # type: ignore[no-untyped-def]
    """(profile, site-0's config): one open in-process site that holds cohort counts."""
    from flows.demo import ALL, DemoSite

    profile, _ = make_federation([DemoSite("site-0", "EU", 1.0, 1, ALL, True)])
    home = profile.parent / "sites" / "site-0"
    policy = yaml.safe_load((home / "policy.yaml").read_text())
    policy["review"] = {"analyses": ["cohort_count"]}
    (home / "policy.yaml").write_text(yaml.safe_dump(policy))
    return profile, SiteConfig.load(home / "site.yaml")


@pytest.mark.integration
def test_a_custodian_approves_in_the_browser_and_the_waiting_flow_completes(  # type: ignore[no-untyped-def]
    reviewing_federation, eunomia, prefect_server, browser
):
    from flows import SiteStatus, connect, run_analysis
    from flows.demo import pooled_answer

    profile, site0 = reviewing_federation
    users = WebUsers(site0.review_users(), hasher=CHEAP)
    users.add("carol", PASSWORD)
    outcome: dict[str, Any] = {}

    def flow() -> None:
        try:
            with connect(profile) as session:
                outcome["result"] = run_analysis(
                    "cohort_count", GI_BLEED, federation=session, review_timeout=90
                )
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    # The Prefect API setting is a context variable: the flow's thread runs in a copy of ours.
    context = contextvars.copy_context()
    waiting = threading.Thread(target=context.run, args=(flow,), name="flow")
    waiting.start()
    with ReviewPageServer(site0, ReviewPageConfig(port=0), users=users) as served:
        tab = browser.new_page()
        try:
            tab.goto(f"{served.url}/reviews")
            assert tab.url.endswith("/signin")  # not signed in: sent to the sign-in form
            tab.get_by_label("User name").fill("carol")
            tab.get_by_label("Password").fill(PASSWORD)
            tab.get_by_role("button", name="Sign in").click()
            tab.wait_for_url("**/reviews")
            assert tab.locator("#user").inner_text() == "carol"

            deadline = time.monotonic() + 60  # until the site holds the flow's result
            while tab.locator("a.job").count() == 0 and waiting.is_alive():
                assert time.monotonic() < deadline, "no held output appeared"
                time.sleep(0.3)
                tab.reload()
            assert "error" not in outcome, outcome
            row = tab.locator("table.queue tbody tr")
            assert "cohort_count" in row.inner_text() and "alice@uni.example" in row.inner_text()
            job_id = tab.locator("a.job").inner_text()
            tab.locator("a.job").click()

            # The detail page: the request, the disclosure checks, the aggregate held.
            tab.wait_for_url(f"**/reviews/{job_id}")
            assert tab.locator("#state").inner_text() == "pending"
            assert "passes the disclosure checks" in tab.locator("#outcome").inner_text()
            assert tab.locator("table.result th").all_inner_texts()[-1] == "count"
            # Rejecting without a reason is refused; nothing is decided.
            tab.get_by_role("button", name="Reject").click()
            assert "needs a reason" in tab.locator(".error").inner_text()
            tab.go_back()
            tab.reload()
            tab.get_by_role("button", name="Approve").click()
            tab.wait_for_url(f"**/reviews/{job_id}?m=decided")
            assert tab.locator("#decision").inner_text().startswith("Approved by carol")
        finally:
            tab.close()
    waiting.join(60)
    assert not waiting.is_alive() and "error" not in outcome, outcome

    result = outcome["result"]
    held = result.outcomes[0]
    assert (held.site, held.status, held.stage, held.job_id) == (
        "site-0",
        SiteStatus.RELEASED,
        "review",
        job_id,
    )
    assert result.sites_contributing == ["site-0"]
    assert result.result.equals(pl.from_arrow(pooled_answer("cohort_count", GI_BLEED, eunomia)))

    with AuditLog(site0.state_dir / "audit.db", site=site0.site) as log:
        assert log.verify().ok
        signins = [(e.actor, e.details["outcome"]) for e in log.entries(event="review_page.signin")]
        assert signins == [("carol", "success")]
        (refused,) = log.entries(event="review.refused")
        assert (refused.actor, refused.details["error"]) == ("carol", "ReviewInvalid")
        (approved,) = log.entries(event="review.approved")
        assert (approved.actor, approved.details["job_id"]) == ("carol", job_id)
        (released,) = log.entries(event="airlock.released")
        assert released.details["review"]["reviewer"] == "carol"
        assert released.details["digests"]["review"] == approved.details["decision_digest"]


@pytest.mark.integration
def test_site_serve_runs_the_page_beside_the_site_api_and_stops_both(  # type: ignore[no-untyped-def]
    make_federation, eunomia
):
    import httpx

    from executors.process import SiteProcess, free_port
    from flows.demo import ALL, DemoSite

    profile, _ = make_federation(
        [DemoSite("site-0", "EU", 1.0, 1, ALL, True)], tables={"person": eunomia["person"]}
    )
    config = profile.parent / "sites" / "site-0" / "site.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["review_page"] = {"port": free_port()}
    config.write_text(yaml.safe_dump(raw))
    api = SiteProcess(
        config, port=free_port(), log=config.parent / "serve.log", args=("--allow-insecure-http",)
    )
    urls = (
        f"http://127.0.0.1:{api.port}/v1/health",
        f"http://127.0.0.1:{raw['review_page']['port']}/signin",
    )
    with httpx.Client(trust_env=False, timeout=5) as http:

        def both_up() -> None:
            try:
                for url in urls:
                    http.get(url).raise_for_status()
            except httpx.HTTPError as exc:
                raise SiteUnavailable(str(exc)) from None

        try:
            api.start().wait_healthy(both_up)
            assert "Sign in" in http.get(urls[1]).text
        finally:
            code = api.stop()
        assert code in (0, -15)  # uvicorn re-raises SIGTERM after a clean stop
        for url in urls:
            with pytest.raises(httpx.TransportError):
                http.get(url)
    with AuditLog(config.parent / "state" / "audit.db", site="site-0") as log:
        assert [e.event for e in log.entries()][-1] == "site.stopped"
