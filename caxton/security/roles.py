"""Roles and the authorization decision, as pure functions over route declarations.

Every route declares the least role that may call it (``RouteSpec.role``) and whether it
changes state (``RouteSpec.mutating``). A caller's role includes every lower one, with one
extra rule: ``readonly`` may only read (GET/HEAD/OPTIONS of a route that does not mutate),
whatever a route declares. A route the app serves without a declaration needs ``admin``.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs


class Role(enum.IntEnum):
    """Who may call a route; higher values include the lower ones."""

    PUBLIC = 0
    READONLY = 1
    USER = 2
    OPERATOR = 3
    ADMIN = 4


class Declared(Protocol):
    """What a route declares about its callers (``caxton.http.routes.RouteSpec``)."""

    @property
    def role(self) -> Role: ...

    @property
    def mutating(self) -> bool: ...


#: The role names of key files, tokens and the CLI (``public`` is not a caller's role).
ROLE_NAMES: dict[str, Role] = {
    "readonly": Role.READONLY,
    "user": Role.USER,
    "operator": Role.OPERATOR,
    "admin": Role.ADMIN,
}
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def parse_role(text: str) -> Role:
    """``"operator"`` -> ``Role.OPERATOR``; raise ValueError naming the valid roles."""
    try:
        return ROLE_NAMES[text.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown role {text!r}; use one of {', '.join(ROLE_NAMES)}") from None


def role_name(role: Role) -> str:
    return role.name.lower()


@attrs.frozen(kw_only=True)
class Requirement:
    """What a matched route asks of its caller."""

    role: Role
    mutating: bool
    rule: str
    #: The route checks the role of each operation its body asks for (``POST /mcp``: one
    #: tools/call searches memory, the next stores), so readonly callers may POST to it.
    per_call: bool = False

    @classmethod
    def of(cls, spec: Declared | None, rule: str) -> Requirement:
        """The requirement of ``spec``; an undeclared route is admin-only and mutating."""
        if spec is None:
            return cls(role=Role.ADMIN, mutating=True, rule=rule)
        per_call = bool(getattr(spec, "roles_per_call", False))
        return cls(role=spec.role, mutating=spec.mutating, rule=rule, per_call=per_call)

    @property
    def public(self) -> bool:
        return self.role is Role.PUBLIC

    def for_options(self) -> Requirement:
        """What an ``OPTIONS`` request on this route asks: at most readonly, and no change."""
        return attrs.evolve(self, role=min(self.role, Role.READONLY), mutating=False)


def denial(caller: Role, requirement: Requirement, method: str) -> str | None:
    """Why ``caller`` may not call ``method`` on the route, or None when it may."""
    if requirement.public:
        return None
    if caller < requirement.role:
        return (
            f"{method} {requirement.rule} needs the {role_name(requirement.role)} role "
            f"(or higher); this credential has {role_name(caller)}"
        )
    reads = (method.upper() in READ_METHODS or requirement.per_call) and not requirement.mutating
    if caller is Role.READONLY and not reads:
        return (
            f"{method} {requirement.rule} changes state and the readonly role may only read; "
            "use a key with the user, operator or admin role"
        )
    return None
