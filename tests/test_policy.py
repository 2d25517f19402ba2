"""Tests for workers.policy (the pure decision) and workers.store (its Redis-backed data)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
import redis
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from workers.models import Requester, Role
from workers.policy import (
    Decision,
    NetworkEntry,
    PolicyFacts,
    PolicyRefused,
    covering,
    decide,
    parse_network,
    recheck,
)
from workers.store import (
    ALLOW_KEY,
    VERIFIED_PREFIX,
    VERIFIED_TTL_S,
    PolicyStore,
    parse_principal,
)

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LAB = ipaddress.ip_address("127.0.0.23")
# Public unicast used purely as data: decide() and recheck() are pure functions, nothing here
# resolves, connects or scans.
PUBLIC = ipaddress.ip_address("100.128.0.5")
OTHER_PUBLIC = ipaddress.ip_address("100.128.1.9")


def entry(network: str, *, lab: bool = False, note: str = "") -> NetworkEntry:
    """Build an allow or opt-out entry for a network."""
    return NetworkEntry(network=network, note=note, lab=lab, added_by="cli:tester", added_at=AT)


def facts(
    role: Role = Role.AGENT,
    *,
    allow: tuple[NetworkEntry, ...] = (),
    opt_outs: tuple[NetworkEntry, ...] = (),
    verified: str | None = None,
) -> PolicyFacts:
    """Build the facts of one request."""
    return PolicyFacts(role=role, allow=allow, opt_outs=opt_outs, verified_address=verified)


def has_control(text: str) -> bool:
    """Return whether text holds a character a terminal would act on."""
    return any(not char.isprintable() for char in text)


# parse_network -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("127.0.0.0/8", "127.0.0.0/8"),
        ("127.0.0.23", "127.0.0.23/32"),
        ("  127.0.0.0/24\n", "127.0.0.0/24"),
        ("::1", "::1/128"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("fd00::/16", "fd00::/16"),
    ],
)
def test_parse_network_accepts_and_canonicalises(text: str, canonical: str) -> None:
    """A single address or a CIDR no wider than /8 (v4) or /16 (v6) parses to its canonical form."""
    assert str(parse_network(text)) == canonical


@pytest.mark.parametrize(
    "text", ["0.0.0.0/0", "10.0.0.0/7", "128.0.0.0/1", "::/0", "2000::/3", "2000::/15"]
)
def test_parse_network_refuses_too_wide(text: str) -> None:
    """Ranges wider than /8 or /16 are refused as a likely typo, with the limit in the reason."""
    with pytest.raises(PolicyRefused) as refused:
        parse_network(text)
    assert refused.value.code == "too_wide"
    assert "too wide" in refused.value.reason


@pytest.mark.parametrize("text", ["127.0.0.1/8", "10.1.0.0/8", "::1/64", "2001:db8::1/32"])
def test_parse_network_refuses_host_bits(text: str) -> None:
    """A network with host bits set is refused rather than silently widened or narrowed."""
    with pytest.raises(PolicyRefused) as refused:
        parse_network(text)
    assert refused.value.code == "bad_network"
    assert "host bits" in refused.value.reason


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "not-a-network",
        "127.0.0.0/33",
        "127.0.0.0/-1",
        "127.0.0.0/8/8",
        "127.0.0.0/8 127.1.0.0/16",
        "127.0.0.0/8,127.1.0.0/16",
        "-oX /tmp/x",
        "--script=evil",
        "127.0.0.0/8; rm -rf /",
        "127.0.0.1\x00",
        "127.0.0.1\x1b[31m",
        "\u202e8/0.0.0.721",
        "<b>127.0.0.0/8</b>",
        "x" * 100_000,
        "1" * 100_000,
    ],
)
def test_parse_network_refuses_garbage_with_a_short_safe_reason(text: str) -> None:
    """Anything that is not one network is refused with a bounded reason free of control chars."""
    with pytest.raises(PolicyRefused) as refused:
        parse_network(text)
    assert refused.value.code == "bad_network"
    assert len(refused.value.reason) <= 250
    assert not has_control(refused.value.reason)


@given(st.text(max_size=300))
@hypothesis_settings(max_examples=200, deadline=None)
def test_parse_network_never_raises_anything_but_policy_refused(text: str) -> None:
    """For any text parse_network returns a network within the width limit or refuses it."""
    refusal: PolicyRefused | None = None
    try:
        network = parse_network(text)
    except PolicyRefused as refused:
        refusal = refused
    if refusal is None:
        assert network.prefixlen >= (8 if network.version == 4 else 16)
    else:
        assert refusal.code in ("bad_network", "too_wide")
        assert len(refusal.reason) <= 250


def test_network_entry_refuses_an_oversized_note() -> None:
    """An entry note longer than 200 characters is rejected by the model."""
    with pytest.raises(ValidationError):
        entry("127.0.0.0/8", note="n" * 201)


def test_covering_returns_narrowest_first_and_ignores_other_versions() -> None:
    """covering() lists only same-version entries holding the address, narrowest first."""
    entries = [entry("127.0.0.0/8"), entry("::1/128"), entry("127.0.0.0/24"), entry("127.1.0.0/16")]
    assert [item.network for item in covering(entries, LAB)] == ["127.0.0.0/24", "127.0.0.0/8"]


# decide --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_opt_out_wins_over_allow_entry_and_verification(role: Role) -> None:
    """An opt-out refuses the address whatever the role, allow entries or verified binding say."""
    request = facts(
        role,
        allow=(entry(f"{PUBLIC}/32"), entry("100.128.0.0/16")),
        opt_outs=(entry("100.128.0.0/24", note="owner asked, ticket 42"),),
        verified=str(PUBLIC),
    )
    with pytest.raises(PolicyRefused) as refused:
        decide(PUBLIC, (PUBLIC,), request)
    assert refused.value.code == "opt_out"
    assert "ticket 42" in refused.value.reason


def test_opt_out_wins_over_lab_entry() -> None:
    """A lab allow entry does not override an opt-out on the same loopback range."""
    request = facts(allow=(entry("127.0.0.0/8", lab=True),), opt_outs=(entry("127.0.0.0/24"),))
    with pytest.raises(PolicyRefused) as refused:
        decide(LAB, (LAB,), request)
    assert refused.value.code == "opt_out"


def test_opt_out_on_any_resolved_address_refuses_the_name() -> None:
    """A name is refused when any address it resolved to is opted out, not only the pinned one."""
    request = facts(allow=(entry("100.128.0.0/16"),), opt_outs=(entry(f"{OTHER_PUBLIC}/32"),))
    with pytest.raises(PolicyRefused) as refused:
        decide(PUBLIC, (PUBLIC, OTHER_PUBLIC), request)
    assert refused.value.code == "opt_out"
    assert str(OTHER_PUBLIC) in refused.value.reason


@pytest.mark.parametrize(
    "allow",
    [
        (),
        (entry("127.0.0.0/8"),),
        (entry("127.0.0.0/24"), entry("127.0.0.23")),
    ],
)
def test_special_purpose_needs_a_lab_entry(allow: tuple[NetworkEntry, ...]) -> None:
    """Loopback needs a lab entry covering it; a plain allow entry is not enough."""
    with pytest.raises(PolicyRefused) as refused:
        decide(LAB, (LAB,), facts(allow=allow))
    assert refused.value.code == "special"
    assert "loopback" in refused.value.reason
    assert "--lab" in refused.value.reason


@pytest.mark.parametrize(
    "lab_network", ["127.1.0.0/16", "127.0.0.24/32", "10.0.0.0/8", "::1/128", "::ffff:0:0/96"]
)
def test_lab_entry_for_a_different_range_does_not_help(lab_network: str) -> None:
    """A lab entry permits only the special-purpose space it covers, not other special ranges."""
    with pytest.raises(PolicyRefused) as refused:
        decide(LAB, (LAB,), facts(allow=(entry(lab_network, lab=True),)))
    assert refused.value.code == "special"


@pytest.mark.parametrize("role", [Role.AGENT, Role.ADMIN])
def test_lab_entry_permits_special_purpose_space(role: Role) -> None:
    """With a lab entry covering it, loopback is scannable by agents and admins."""
    decision = decide(LAB, (LAB,), facts(role, allow=(entry("127.0.0.0/8", lab=True),)))
    assert decision == Decision(basis="allow entry 127.0.0.0/8")


@pytest.mark.parametrize(
    "smuggled",
    [
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "fe80::1",
    ],
)
def test_hostname_resolving_to_any_special_address_is_refused(smuggled: str) -> None:
    """A name with any special-purpose address is refused, even when the pinned one is fine."""
    hidden = ipaddress.ip_address(smuggled)
    request = facts(allow=(entry("100.128.0.0/16"),))
    assert decide(PUBLIC, (PUBLIC,), request).basis == "allow entry 100.128.0.0/16"
    with pytest.raises(PolicyRefused) as refused:
        decide(PUBLIC, (PUBLIC, hidden), request)
    assert refused.value.code == "special"
    assert str(hidden) in refused.value.reason


@pytest.mark.parametrize("role", [Role.AGENT, Role.ADMIN])
def test_agents_and_admins_need_an_allow_entry(role: Role) -> None:
    """Without an allow entry covering the address, agents and admins are refused."""
    request = facts(role, allow=(entry("100.129.0.0/16"),), verified=str(PUBLIC))
    with pytest.raises(PolicyRefused) as refused:
        decide(PUBLIC, (PUBLIC,), request)
    assert refused.value.code == "not_allowed"


def test_agent_decision_names_the_narrowest_entry() -> None:
    """The basis of an allowed agent scan is the narrowest allow entry holding the address."""
    request = facts(allow=(entry("100.128.0.0/16"), entry("100.128.0.0/24")))
    assert decide(PUBLIC, (PUBLIC,), request).basis == "allow entry 100.128.0.0/24"


def test_home_user_may_scan_only_the_verified_address() -> None:
    """A home user is allowed exactly their verified address."""
    assert decide(PUBLIC, (PUBLIC,), facts(Role.USER, verified=str(PUBLIC))) == Decision(
        basis="verified own address"
    )


@pytest.mark.parametrize(
    ("verified", "allow"),
    [
        (None, ()),
        (str(OTHER_PUBLIC), ()),
        (None, (entry("100.128.0.0/16"),)),
        (f" {PUBLIC}", ()),
        (f"{PUBLIC}/32", ()),
    ],
)
def test_home_user_refused_for_anything_else(
    verified: str | None, allow: tuple[NetworkEntry, ...]
) -> None:
    """Home users cannot use allow entries, another verified address or a near-match string."""
    with pytest.raises(PolicyRefused) as refused:
        decide(PUBLIC, (PUBLIC,), facts(Role.USER, allow=allow, verified=verified))
    assert refused.value.code == "not_own_address"
    assert "/check" in refused.value.reason


def test_home_user_verified_special_address_still_needs_a_lab_entry() -> None:
    """A verified loopback address is refused as special-purpose unless a lab entry covers it."""
    with pytest.raises(PolicyRefused) as refused:
        decide(LAB, (LAB,), facts(Role.USER, verified=str(LAB)))
    assert refused.value.code == "special"
    lab = facts(Role.USER, allow=(entry("127.0.0.0/8", lab=True),), verified=str(LAB))
    assert decide(LAB, (LAB,), lab).basis == "verified own address"


def test_empty_resolved_set_falls_back_to_the_pinned_address() -> None:
    """With no resolved list the pinned address itself is checked against special space."""
    with pytest.raises(PolicyRefused) as refused:
        decide(LAB, (), facts(allow=(entry("127.0.0.0/8"),)))
    assert refused.value.code == "special"


# recheck (worker side) -----------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_recheck_allows_allowlisted_address_whatever_the_payload_role(role: Role) -> None:
    """The worker accepts an address an allow entry covers, whatever role the facts claim."""
    decision = recheck(PUBLIC, facts(role, allow=(entry("100.128.0.0/16"),)))
    assert decision.basis == "allow entry 100.128.0.0/16"


@pytest.mark.parametrize("role", list(Role))
def test_recheck_accepts_the_requesters_verified_address(role: Role) -> None:
    """The worker accepts the requester's verified address without an allow entry."""
    assert recheck(PUBLIC, facts(role, verified=str(PUBLIC))).basis == "verified own address"


@pytest.mark.parametrize("role", list(Role))
def test_recheck_refuses_without_any_basis_even_for_admin_role(role: Role) -> None:
    """A payload claiming admin does not help: no allow entry and no verification means refusal."""
    with pytest.raises(PolicyRefused) as refused:
        recheck(PUBLIC, facts(role, allow=(entry("100.129.0.0/16"),), verified=str(OTHER_PUBLIC)))
    assert refused.value.code == "not_allowed"


@pytest.mark.parametrize(
    ("request_facts", "code"),
    [
        (facts(Role.USER, opt_outs=(entry(f"{PUBLIC}/32"),), verified=str(PUBLIC)), "opt_out"),
        (
            facts(allow=(entry("100.128.0.0/16"),), opt_outs=(entry("100.128.0.0/24"),)),
            "opt_out",
        ),
    ],
)
def test_recheck_applies_opt_outs(request_facts: PolicyFacts, code: str) -> None:
    """An opt-out added after enqueue stops the job at the worker."""
    with pytest.raises(PolicyRefused) as refused:
        recheck(PUBLIC, request_facts)
    assert refused.value.code == code


def test_recheck_refuses_verified_special_address_without_lab_entry() -> None:
    """The worker refuses a special-purpose address even when it is the verified one."""
    with pytest.raises(PolicyRefused) as refused:
        recheck(LAB, facts(Role.USER, allow=(entry("127.0.0.0/8"),), verified=str(LAB)))
    assert refused.value.code == "special"


# PolicyStore on the real Redis ---------------------------------------------------------------

ADMINS = frozenset({"slack:UADMIN", "telegram:1000"})


@pytest.fixture
def store(redis_client: redis.Redis) -> PolicyStore:
    """A policy store on the flushed test Redis with two configured admins."""
    return PolicyStore(redis_client, admins=ADMINS)


def who(principal: str) -> Requester:
    """Parse a principal for a test."""
    return parse_principal(principal)


def test_roles_configured_admins_granted_and_default(store: PolicyStore) -> None:
    """Configured admins are admins, granted roles apply, and everyone else is a home user."""
    assert store.role_of(who("slack:UADMIN")) is Role.ADMIN
    assert store.role_of(who("slack:U1")) is Role.USER
    assert store.grant("slack:U1", Role.AGENT) == who("slack:U1")
    assert store.grant("telegram:77", Role.ADMIN) == who("telegram:77")
    assert store.role_of(who("slack:U1")) is Role.AGENT
    assert store.role_of(who("telegram:77")) is Role.ADMIN
    assert store.roles() == {
        "slack:U1": Role.AGENT,
        "telegram:77": Role.ADMIN,
        "slack:UADMIN": Role.ADMIN,
        "telegram:1000": Role.ADMIN,
    }


def test_grant_user_role_is_refused(store: PolicyStore) -> None:
    """Granting the home-user role is refused: revoking is how someone becomes a home user."""
    with pytest.raises(PolicyRefused) as refused:
        store.grant("slack:U1", Role.USER)
    assert refused.value.code == "role"
    assert store.roles() == dict.fromkeys(sorted(ADMINS), Role.ADMIN)


def test_revoke_returns_a_granted_role_to_home_user(store: PolicyStore) -> None:
    """Revoking a granted role makes the principal a home user again; a second revoke is refused."""
    store.grant("slack:U1", Role.AGENT)
    assert store.revoke("Slack:U1") == who("slack:U1")
    assert store.role_of(who("slack:U1")) is Role.USER
    with pytest.raises(PolicyRefused) as refused:
        store.revoke("slack:U1")
    assert refused.value.code == "no_role"


def test_revoking_a_configured_admin_is_refused(store: PolicyStore) -> None:
    """An admin from PORTPATROL_ADMINS cannot be revoked in Redis and stays an admin."""
    store.grant("slack:UADMIN", Role.AGENT)
    with pytest.raises(PolicyRefused) as refused:
        store.revoke("slack:UADMIN")
    assert refused.value.code == "configured_admin"
    assert "PORTPATROL_ADMINS" in refused.value.reason
    assert store.role_of(who("slack:UADMIN")) is Role.ADMIN
    assert store.roles()["slack:UADMIN"] is Role.ADMIN


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":",
        "slack",
        "slack:",
        ":U012AB",
        "1slack:U1",
        "sl ack:U1",
        "slack\x00:U1",
        "\x1b[31mslack:U1",
        "<b>slack</b>:U1",
        "-oX:U1",
        "s" * 33 + ":U1",
        "slack:" + "U" * 129,
        "x" * 100_000,
        "slack" * 20_000 + ":U1",
        "slack:a:b",
        "slack:U1;id",
        "slack:U1\x00",
        "slack:U\x1b[2J",
        "slack:-oX",
        "slack:<@U1>",
    ],
)
def test_parse_principal_refuses_hostile_input_with_bounded_reason(text: str) -> None:
    """Malformed principals are refused with a short reason that shows no raw control character."""
    with pytest.raises(PolicyRefused) as refused:
        parse_principal(text)
    assert refused.value.code == "bad_principal"
    assert len(refused.value.reason) < 200
    assert not has_control(refused.value.reason)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("slack:U012AB", "slack:U012AB"),
        ("  Telegram:123456 \n", "telegram:123456"),
        ("cli:tester", "cli:tester"),
    ],
)
def test_parse_principal_accepts_platform_user(text: str, expected: str) -> None:
    """platform:user_id parses with surrounding space trimmed and the platform lower-cased."""
    assert str(parse_principal(text)) == expected


@pytest.mark.parametrize("bad", ["", "slack", "slack:", "Sl ack:U1", "x" * 10_000])
def test_grant_with_bad_principal_stores_nothing(store: PolicyStore, bad: str) -> None:
    """A refused grant leaves the roles as they were."""
    with pytest.raises(PolicyRefused):
        store.grant(bad, Role.AGENT)
    assert store.roles() == dict.fromkeys(sorted(ADMINS), Role.ADMIN)


def test_allow_entries_round_trip_sorted_and_replaced(store: PolicyStore) -> None:
    """Allow entries are stored canonically, listed v4 then v6 in order; re-adding replaces."""
    store.allow("127.1.0.0/16", added_by="cli:tester", at=AT, note="lab B", lab=True)
    store.allow("::1", added_by="cli:tester", at=AT)
    first = store.allow("127.0.0.0/24", added_by="cli:tester", at=AT, note="old")
    replaced = store.allow(" 127.0.0.0/24 ", added_by="slack:UADMIN", at=AT, note="new", lab=True)
    assert first.note == "old"
    listed = store.allow_entries()
    assert [item.network for item in listed] == ["127.0.0.0/24", "127.1.0.0/16", "::1/128"]
    assert listed[0] == replaced
    assert listed[0].lab
    assert listed[0].note == "new"
    assert listed[0].added_by == "slack:UADMIN"
    assert listed[0].added_at == AT


@pytest.mark.parametrize(
    ("network", "code"),
    [("127.0.0.1/8", "bad_network"), ("0.0.0.0/0", "too_wide"), ("-oX", "bad_network")],
)
def test_allow_refuses_bad_networks_and_stores_nothing(
    store: PolicyStore, redis_client: redis.Redis, network: str, code: str
) -> None:
    """A bad allow network is refused and leaves Redis untouched."""
    with pytest.raises(PolicyRefused) as refused:
        store.allow(network, added_by="cli:tester", at=AT)
    assert refused.value.code == code
    assert redis_client.hlen(ALLOW_KEY) == 0


def test_allow_refuses_an_oversized_note(store: PolicyStore, redis_client: redis.Redis) -> None:
    """A note beyond 200 characters is rejected before anything is written."""
    with pytest.raises(ValueError, match="200"):
        store.allow("127.0.0.0/8", added_by="cli:tester", at=AT, note="n" * 10_000)
    assert redis_client.hlen(ALLOW_KEY) == 0


def test_disallow_removes_by_canonical_network(store: PolicyStore) -> None:
    """Removing an entry accepts any spelling of the same network; removing it twice is refused."""
    store.allow("::1", added_by="cli:tester", at=AT)
    assert store.disallow("0:0:0:0:0:0:0:1/128") == "::1/128"
    assert store.allow_entries() == []
    with pytest.raises(PolicyRefused) as refused:
        store.disallow("::1")
    assert refused.value.code == "no_entry"


def test_opt_outs_are_kept_apart_from_allow_entries(store: PolicyStore) -> None:
    """Opt-outs are listed separately and are never lab entries."""
    store.allow("127.0.0.0/8", added_by="cli:tester", at=AT, lab=True)
    made = store.opt_out("127.0.0.0/24", added_by="cli:tester", at=AT, note="owner asked")
    assert [item.network for item in store.opt_outs()] == ["127.0.0.0/24"]
    assert not made.lab
    assert [item.network for item in store.allow_entries()] == ["127.0.0.0/8"]
    with pytest.raises(PolicyRefused) as refused:
        decide(LAB, (LAB,), store.facts_for(who("slack:UADMIN")))
    assert refused.value.code == "opt_out"


def test_verified_address_binding_has_a_30_day_ttl(
    store: PolicyStore, redis_client: redis.Redis
) -> None:
    """A verified address is stored per user with a TTL of about 30 days."""
    user = who("telegram:42")
    store.bind_address(user, "127.0.0.23")
    assert store.verified_address(user) == "127.0.0.23"
    assert store.verified_address(who("telegram:43")) is None
    ttl = redis_client.ttl(f"{VERIFIED_PREFIX}telegram:42")
    assert VERIFIED_TTL_S == 30 * 24 * 3600
    assert VERIFIED_TTL_S - 60 <= ttl <= VERIFIED_TTL_S


def test_forget_address_removes_the_binding(store: PolicyStore) -> None:
    """Forgetting a binding removes it and reports whether there was one."""
    user = who("telegram:42")
    store.bind_address(user, "127.0.0.23")
    assert store.forget_address(user) is True
    assert store.verified_address(user) is None
    assert store.forget_address(user) is False


def test_facts_for_gathers_role_entries_and_binding(store: PolicyStore) -> None:
    """facts_for collects the caller's role, all entries and the verified address for decide()."""
    user = who("telegram:42")
    store.allow("127.0.0.0/8", added_by="cli:tester", at=AT, lab=True)
    store.bind_address(user, "127.0.0.23")
    gathered = store.facts_for(user)
    assert gathered.role is Role.USER
    assert [item.network for item in gathered.allow] == ["127.0.0.0/8"]
    assert gathered.verified_address == "127.0.0.23"
    assert store.facts_for(user, Role.AGENT).role is Role.AGENT
    assert decide(LAB, (LAB,), gathered).basis == "verified own address"
