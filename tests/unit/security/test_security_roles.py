"""Role decisions over route declarations."""

from __future__ import annotations

import pytest

from caxton.security.roles import ROLE_NAMES, Requirement, Role, denial, parse_role


def test_role_names_parse_and_unknown_names_list_the_valid_ones() -> None:
    assert [parse_role(n) for n in ("readonly", "User", " operator ", "ADMIN")] == [
        Role.READONLY,
        Role.USER,
        Role.OPERATOR,
        Role.ADMIN,
    ]
    with pytest.raises(ValueError, match="readonly, user, operator, admin"):
        parse_role("public")


@pytest.mark.parametrize("caller", list(ROLE_NAMES.values()))
@pytest.mark.parametrize("needed", list(Role))
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_higher_roles_include_lower_ones_and_readonly_only_reads(
    caller: Role, needed: Role, method: str
) -> None:
    requirement = Requirement(role=needed, mutating=method != "GET", rule="/r")
    allowed = denial(caller, requirement, method) is None
    if needed is Role.PUBLIC:
        assert allowed
    elif caller is Role.READONLY:
        assert allowed == (needed is Role.READONLY and method == "GET")
    else:
        assert allowed == (caller >= needed)


def test_readonly_cannot_call_a_non_mutating_post_or_a_mutating_get() -> None:
    post = Requirement(role=Role.READONLY, mutating=False, rule="/v")
    get = Requirement(role=Role.READONLY, mutating=True, rule="/m")
    assert denial(Role.READONLY, post, "POST") is not None
    assert denial(Role.READONLY, get, "GET") is not None
    assert denial(Role.USER, post, "POST") is None


def test_undeclared_routes_need_admin() -> None:
    requirement = Requirement.of(None, "/secret")
    assert requirement.role is Role.ADMIN
    assert requirement.mutating
    reason = denial(Role.OPERATOR, requirement, "GET")
    assert reason is not None
    assert "admin" in reason


def test_options_asks_only_for_a_known_caller() -> None:
    deploy = Requirement(role=Role.OPERATOR, mutating=True, rule="/api/v1/agents")
    options = deploy.for_options()
    assert (options.role, options.mutating) == (Role.READONLY, False)
    assert denial(Role.READONLY, options, "OPTIONS") is None
    health = Requirement(role=Role.PUBLIC, mutating=False, rule="/health")
    assert health.for_options().public
