"""A count no one can farm: proof of work, tiers, honeypot, who is the same person.

Against the real redis-server, through the app (test client) and, where many processes
and workers matter, a real multi-worker gunicorn.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from checks import (
    STATEMENT,
    assert_counted,
    assert_problem,
    endorsements_url,
    legacy_endorse,
    person,
    solve,
    store_state,
    write_statement,
)
from conftest import ADMIN_TOKEN, ALLY, SECRET
from flask import Flask
from flask.testing import FlaskClient
from load import post_all, solve_then_post_args, with_solved_challenges
from redis import Redis
from servers import Gunicorn

import widget.pow
from widget.abuse import canonical_email
from widget.pow import ProofOfWork
from widget.privacy import email_hmac

MakeApp = Callable[..., Flask]
URL = endorsements_url()
CHALLENGE = f"/api/v1/statements/{STATEMENT}/challenge"


def pow_app(make_app: MakeApp, **overrides: Any) -> FlaskClient:
    return make_app(POW=True, POW_COST=1, **overrides).test_client()


def solved(client: FlaskClient, statement: str = STATEMENT) -> str:
    response = client.get(f"/api/v1/statements/{statement}/challenge")
    assert response.status_code == 200, response.get_data(as_text=True)
    return solve(response.get_json())


def count(redis: Redis, statement: str = STATEMENT) -> int:
    return int(redis.get(f"us:{{{statement}}}:count") or 0)


# -- proof of work ---------------------------------------------------------------------------


def test_challenge_is_altcha_json_uncached_and_cors(make_app: MakeApp) -> None:
    client = pow_app(make_app)
    response = client.get(CHALLENGE, headers={"Origin": ALLY})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == ALLY
    body = response.get_json()
    parameters = body["parameters"]
    assert parameters["algorithm"] == "PBKDF2/SHA-256"
    assert parameters["data"] == {"statement": STATEMENT}
    assert 0 < parameters["expiresAt"] - time.time() <= 600
    assert body["signature"]
    # The official solver solves it, and the answer is what ALTCHA's widget would send.
    payload = json.loads(base64.b64decode(solve(body)))
    assert set(payload) == {"challenge", "solution"}
    assert_problem(client.get(CHALLENGE, headers={"Origin": "https://hostile.example"}), 403)
    assert_problem(client.get("/api/v1/statements/nope/challenge"), 404)


def test_a_solved_challenge_counts(make_app: MakeApp, redis_client: Redis) -> None:
    client = pow_app(make_app)
    response = client.post(URL, json=person(1, altcha=solved(client)))
    assert response.status_code == 201, response.get_json()
    assert_counted(response.get_json(), 1)


def expired_payload() -> str:
    pow_ = ProofOfWork(SECRET, 1)
    ttl = widget.pow.CHALLENGE_TTL
    widget.pow.CHALLENGE_TTL = -5
    try:
        challenge = pow_.challenge(STATEMENT)
    finally:
        widget.pow.CHALLENGE_TTL = ttl
    return solve(challenge)


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "empty",
        "garbage",
        "not-json",
        "json-list",
        "wrong-shape",
        "forged",
        "expired",
        "tampered",
        "other-statement",
    ],
)
def test_every_bad_solution_is_422_and_changes_nothing(
    make_app: MakeApp, redis_client: Redis, tmp_path: Path, case: str
) -> None:
    write_statement(tmp_path, "other-statement")
    client = pow_app(make_app, STATEMENTS_DIR=str(tmp_path))
    good = solved(client)
    payloads: dict[str, Any] = {
        "missing": None,
        "empty": "",
        "garbage": "not base64 at all!",
        "not-json": base64.b64encode(b"hello").decode(),
        "json-list": base64.b64encode(b"[1, 2]").decode(),
        "wrong-shape": base64.b64encode(b'{"challenge": 1, "solution": "x"}').decode(),
        # Solved, but signed by another service.
        "forged": solve(ProofOfWork("another-secret-0123456789abcdef", 1).challenge(STATEMENT)),
        "expired": expired_payload(),
        "other-statement": solved(client, "other-statement"),
    }
    decoded = json.loads(base64.b64decode(good))
    decoded["challenge"]["parameters"]["cost"] = 2  # the signature no longer matches
    payloads["tampered"] = base64.b64encode(json.dumps(decoded).encode()).decode()
    body = person(1)
    if payloads[case] is not None:
        body["altcha"] = payloads[case]
    before = store_state(redis_client)
    problem = assert_problem(client.post(URL, json=body), 422)
    assert "altcha" in problem["errors"], problem
    assert store_state(redis_client) == before
    # The good solution still works afterwards: a refusal used nothing up.
    assert client.post(URL, json=person(1, altcha=good)).status_code == 201


def test_a_solution_counts_once_even_with_another_email(
    make_app: MakeApp, redis_client: Redis
) -> None:
    client = pow_app(make_app)
    payload = solved(client)
    assert client.post(URL, json=person(1, altcha=payload)).status_code == 201
    replay = assert_problem(client.post(URL, json=person(2, altcha=payload)), 422)
    assert "used" in replay["errors"]["altcha"]
    assert count(redis_client) == 1
    # The same person again with the same solution (a retry after a lost answer): a
    # duplicate, not an error and not a second count.
    again = client.post(URL, json=person(1, altcha=payload))
    assert again.status_code == 200 and again.get_json()["status"] == "duplicate"
    assert count(redis_client) == 1


def test_challenges_are_rate_limited_per_client(make_app: MakeApp) -> None:
    client = pow_app(make_app, CHALLENGE_LIMIT="3/minute")
    assert [client.get(CHALLENGE).status_code for _ in range(3)] == [200, 200, 200]
    limited = client.get(CHALLENGE)
    problem = assert_problem(limited, 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert problem["limit"] == "challenge"
    assert problem["detail"].startswith("Too many proof-of-work challenges from your address")
    client.environ_base["REMOTE_ADDR"] = "198.51.100.40"  # another client has its own
    assert client.get(CHALLENGE).status_code == 200


def test_proof_of_work_off_takes_endorsements_without_it(
    make_app: MakeApp, redis_client: Redis
) -> None:
    client = make_app(POW=False).test_client()
    assert client.post(URL, json=person(1)).status_code == 201


def test_200_concurrent_endorsements_from_4_processes_each_solved_count_exactly(
    start_gunicorn: Callable[..., Gunicorn], redis_client: Redis
) -> None:
    server = start_gunicorn(workers=4, WIDGET_POW="on", WIDGET_POW_COST="1")
    url, challenge_url = server.url + URL, server.url + CHALLENGE
    chunks = [[person(f"p{c}-{n}") for n in range(50)] for c in range(4)]
    start_at = time.time() + 8.0  # time to start the children and solve 50 each
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        args = [(url, challenge_url, chunk, 25, start_at) for chunk in chunks[1:]]
        pending = pool.map_async(solve_then_post_args, args)
        mine = with_solved_challenges(challenge_url, chunks[0])
        replies = post_all(url, mine, threads=25, start_at=start_at)
        for batch in pending.get(timeout=120):
            replies.extend(batch)
    assert Counter(r.status for r in replies) == {201: 200}, [r.body for r in replies][:3]
    assert sorted(r.body["count"] for r in replies) == list(range(1, 201))
    assert store_state(redis_client).count == 200
    # Every solution is now used: replaying all of them counts nothing more.
    again = post_all(url, [{**r, "email": "x" + r["email"]} for r in mine[:20]], threads=10)
    assert {r.status for r in again} == {422}
    assert store_state(redis_client).count == 200


# -- honeypot ----------------------------------------------------------------------------


def test_honeypot_answers_like_a_success_and_counts_nothing(
    make_app: MakeApp, redis_client: Redis
) -> None:
    client = pow_app(make_app)
    real = client.post(URL, json=person(1, altcha=solved(client)))
    before = store_state(redis_client)
    honeypots = honeypot_total(client)  # the counter is the process's: other tests add too
    fake = client.post(URL, json=person(2, website="https://spam.example"))
    assert fake.status_code == real.status_code == 201
    assert_counted(fake.get_json(), 1)  # the real current count
    assert set(fake.get_json()) == set(real.get_json())
    assert fake.headers["Content-Type"] == real.headers["Content-Type"]
    assert fake.headers["Cache-Control"] == real.headers["Cache-Control"]
    assert store_state(redis_client) == before
    assert honeypot_total(client) == honeypots + 1


def honeypot_total(client: FlaskClient) -> float:
    metrics = client.get("/metrics", headers={"Authorization": "Bearer " + ADMIN_TOKEN}).text
    series = 'undersign_endorsements_total{outcome="rejected",reason="honeypot"} '
    lines = [line for line in metrics.splitlines() if line.startswith(series)]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_honeypot_in_the_no_javascript_form(make_app: MakeApp, redis_client: Redis) -> None:
    client = make_app().test_client()
    page = client.get(f"/s/{STATEMENT}").get_data(as_text=True)
    assert 'name="website"' in page
    token = page.split('name="token" value="', 1)[1].split('"', 1)[0]
    form = {
        "token": token,
        "name": "Bot",
        "email": "bot@example.org",
        "consent": "1",
        "website": "x",
    }
    response = client.post(f"/s/{STATEMENT}", data=form)
    assert response.status_code == 200
    assert count(redis_client) == 0


# -- tiers ---------------------------------------------------------------------------------


def post_from(client: FlaskClient, address: str, n: int | str, **extra: Any) -> Any:
    return client.post(URL, json=person(n, **extra), environ_base={"REMOTE_ADDR": address})


def test_addresses_of_one_ipv6_slash_64_share_the_client_tier(
    make_app: MakeApp, redis_client: Redis
) -> None:
    client = make_app(ENDORSE_LIMIT="2/minute").test_client()
    assert post_from(client, "2001:db8:1:2::1", 1).status_code == 201
    assert post_from(client, "2001:db8:1:2:ffff:ffff:ffff:ffff", 2).status_code == 201
    refused = post_from(client, "2001:db8:1:2:1234::99", 3)
    body = assert_problem(refused, 429)
    assert body["limit"] == "client"
    assert int(refused.headers["Retry-After"]) == body["retry_after"] >= 1
    assert post_from(client, "2001:db8:1:3::1", 4).status_code == 201  # the next /64
    assert count(redis_client) == 3


def test_slash_24_neighbours_share_the_network_tier(make_app: MakeApp, redis_client: Redis) -> None:
    client = make_app(NETWORK_LIMIT="3/minute").test_client()
    for n, address in enumerate(["203.0.113.1", "203.0.113.2", "203.0.113.3"]):
        assert post_from(client, address, n).status_code == 201
    body = assert_problem(post_from(client, "203.0.113.200", 9), 429)
    assert body["limit"] == "network"
    assert post_from(client, "203.0.114.1", 10).status_code == 201
    # An IPv6 /48 is one network too.
    client = make_app(NETWORK_LIMIT="1/minute").test_client()
    assert post_from(client, "2001:db8:aa::1", 20).status_code == 201
    assert assert_problem(post_from(client, "2001:db8:aa:ff::1", 21), 429)["limit"] == "network"


def test_source_and_statement_tiers(make_app: MakeApp, redis_client: Redis) -> None:
    client = make_app(SOURCE_LIMIT="2/minute").test_client()
    headers = {"Origin": ALLY}
    for n in range(2):
        assert client.post(URL, json=person(n), headers=headers).status_code == 201
    body = assert_problem(client.post(URL, json=person(5), headers=headers), 429)
    assert body["limit"] == "source"
    assert client.post(URL, json=person(6)).status_code == 201  # "direct" is another source
    client = make_app(STATEMENT_LIMIT="4/minute").test_client()
    assert post_from(client, "198.51.100.9", 7).status_code == 201
    body = assert_problem(post_from(client, "192.0.2.9", 8), 429)
    assert body["limit"] == "statement"


def tier_keys(redis: Redis) -> dict[str, bytes | None]:
    keys = sorted(k.decode() for k in redis.scan_iter(f"us:{{{STATEMENT}}}:rl:*"))
    return {k: redis.get(k) for k in keys}


def test_a_refused_endorsement_uses_no_quota(make_app: MakeApp, redis_client: Redis) -> None:
    client = make_app(ENDORSE_LIMIT="5/minute", NETWORK_LIMIT="2/minute").test_client()
    assert post_from(client, "203.0.113.10", 1).status_code == 201
    assert post_from(client, "203.0.113.11", 2).status_code == 201
    before = tier_keys(redis_client)
    for n in range(3, 8):  # the network tier refuses: no tier moves
        assert_problem(post_from(client, "203.0.113.10", n), 429)
    assert tier_keys(redis_client) == before
    assert count(redis_client) == 2
    # A duplicate uses the two address tiers (probing who endorsed costs quota), not the
    # source or statement tiers; a counted one uses every tier.
    client = make_app(ENDORSE_LIMIT="3/minute").test_client()
    assert post_from(client, "192.0.2.50", 1).get_json()["status"] == "duplicate"
    assert post_from(client, "192.0.2.50", 1).get_json()["status"] == "duplicate"
    assert post_from(client, "192.0.2.50", 30).status_code == 201
    assert assert_problem(post_from(client, "192.0.2.50", 31), 429)["limit"] == "client"


def test_a_refused_endorsement_before_the_tiers_uses_no_quota(
    make_app: MakeApp, redis_client: Redis
) -> None:
    client = pow_app(make_app, ENDORSE_LIMIT="1/minute")
    assert_problem(client.post(URL, json=person(1)), 422)  # no proof of work
    assert_problem(client.post(URL, json=person(1, altcha="bad")), 422)
    assert tier_keys(redis_client) == {}
    assert client.post(URL, json=person(1, altcha=solved(client))).status_code == 201


# -- who is the same person --------------------------------------------------------------


def test_gmail_dots_tags_and_googlemail_are_one_person(
    make_app: MakeApp, redis_client: Redis
) -> None:
    client = make_app().test_client()
    first = client.post(URL, json=person(1, email="a.b+x@gmail.com"))
    assert first.status_code == 201
    again = client.post(URL, json=person(2, email="ab@googlemail.com"))
    assert again.status_code == 200 and again.get_json()["status"] == "duplicate"
    assert client.post(URL, json=person(3, email="A.B@GMail.com")).status_code == 200
    assert count(redis_client) == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("ab@example.org", "a\u200bb@example.org"),  # a zero-width space
        ("ab@example.org", "\uff41\uff42@example.org"),  # fullwidth letters
        ("ab@example.org", "ab@EXAMPLE.org\u200d"),  # a joiner after the domain
        ("kim+news@outlook.com", "kim@outlook.com"),  # plus addressing
        ("ivan+1@yandex.ru", "Ivan+2@Yandex.RU"),
        ("user@münchen.de", "user@xn--mnchen-3ya.de"),  # IDN in ASCII form
    ],
)
def test_unicode_tricks_and_aliases_are_one_person(
    make_app: MakeApp, redis_client: Redis, first: str, second: str
) -> None:
    client = make_app().test_client()
    assert client.post(URL, json=person(1, email=first)).status_code == 201
    again = client.post(URL, json=person(2, email=second))
    assert again.get_json() == {"status": "duplicate", "count": 1}


def test_plus_tags_stay_apart_where_the_provider_does_not_strip_them(
    make_app: MakeApp, redis_client: Redis
) -> None:
    client = make_app().test_client()
    assert client.post(URL, json=person(1, email="a+1@example.org")).status_code == 201
    assert client.post(URL, json=person(2, email="a+2@example.org")).status_code == 201
    assert client.post(URL, json=person(3, email="a.b@example.org")).status_code == 201
    assert client.post(URL, json=person(4, email="ab@example.org")).status_code == 201


def test_endorsements_made_before_the_rule_keep_their_hmacs(
    make_app: MakeApp, redis_client: Redis
) -> None:
    """Someone counted under the old rule (trimmed, lowercased) is still recognised."""
    old = email_hmac(SECRET, STATEMENT, "a.b+news@gmail.com")  # as stored before
    legacy_endorse(redis_client, STATEMENT, old, "Early")
    client = make_app().test_client()  # an upgrade: the old record goes into the log first
    again = client.post(URL, json=person(1, email="A.B+news@gmail.com"))
    assert again.get_json() == {"status": "duplicate", "count": 1}
    assert canonical_email("A.B+news@gmail.com").address == "ab@gmail.com"


def test_block_disposable_refuses_throwaway_domains(
    make_app: MakeApp, redis_client: Redis, tmp_path: Path
) -> None:
    path = write_statement(tmp_path, "strict")
    path.write_text(
        path.read_text().replace("goal = 100\n", "goal = 100\nblock_disposable = true\n")
    )
    client = make_app(STATEMENTS_DIR=str(tmp_path)).test_client()
    strict = endorsements_url("strict")
    body = assert_problem(client.post(strict, json=person(1, email="x@mailinator.com")), 422)
    assert "email" in body["errors"]
    assert_problem(client.post(strict, json=person(2, email="x@eu.mailinator.com")), 422)
    assert count(redis_client, "strict") == 0
    assert client.post(strict, json=person(3, email="x@example.org")).status_code == 201
    # Statements without the setting take them.
    assert client.post(URL, json=person(4, email="x@mailinator.com")).status_code == 201


def test_endorsement_ids_carry_only_the_minute(make_app: MakeApp, redis_client: Redis) -> None:
    client = make_app().test_client()
    for n in range(3):
        assert client.post(URL, json=person(n)).status_code == 201
    ids = [entry_id.decode() for entry_id, _ in redis_client.xrange(f"us:{{{STATEMENT}}}:log")]
    times = {int(i.split("-")[0]) for i in ids}
    assert all(t % 60_000 == 0 for t in times), ids
    assert len(set(ids)) == 3
