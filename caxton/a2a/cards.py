"""Agent cards (A2A 1.0 ``AgentCard`` JSON) for the running agents and for the server.

An agent's skills are its capabilities (skill id = capability name, so a remote Caxton that
reads the card registers the same capabilities); its security schemes are the ones the server
accepts when ``security.authentication.enabled`` (an API key in ``X-API-Key``, or a bearer
token: a JWT or an API key); its one interface is JSON-RPC at ``/a2a/{name}``, A2A 1.0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from caxton.a2a.wire import PROTOCOL_VERSION

if TYPE_CHECKING:
    from collections.abc import Sequence

MODES = ["text/plain", "application/json"]


@attrs.frozen(kw_only=True)
class CardFacts:
    """What a card says about one agent."""

    name: str
    description: str
    version: str
    capabilities: tuple[str, ...]
    kind: str


def security_schemes(auth_required: bool) -> dict[str, Any]:
    """``securitySchemes`` and ``securityRequirements`` (none with authentication off)."""
    if not auth_required:
        return {}
    return {
        "securitySchemes": {
            "apiKey": {
                "apiKeySecurityScheme": {
                    "description": "A Caxton API key (caxton keys create)",
                    "location": "header",
                    "name": "X-API-Key",
                }
            },
            "bearer": {
                "httpAuthSecurityScheme": {
                    "description": "A Caxton token (caxton token issue) or API key",
                    "scheme": "Bearer",
                    "bearerFormat": "JWT",
                }
            },
        },
        "securityRequirements": [
            {"schemes": {"apiKey": {"list": []}}},
            {"schemes": {"bearer": {"list": []}}},
        ],
    }


def agent_card(facts: CardFacts, *, base_url: str, auth_required: bool) -> dict[str, Any]:
    """The card of one agent served at ``base_url``."""
    skills = [
        {
            "id": capability,
            "name": capability,
            "description": f"{facts.name} provides {capability}",
            "tags": [capability, facts.kind],
        }
        for capability in facts.capabilities
    ] or [
        {
            "id": facts.name,
            "name": facts.name,
            "description": facts.description or f"talk to {facts.name}",
            "tags": [facts.kind],
        }
    ]
    return {
        "name": facts.name,
        "description": facts.description or f"Caxton {facts.kind} agent {facts.name}",
        "version": facts.version,
        "supportedInterfaces": [
            {
                "url": f"{base_url}/a2a/{facts.name}",
                "protocolBinding": "JSONRPC",
                "protocolVersion": PROTOCOL_VERSION,
            }
        ],
        **_served_by(base_url, auth_required=auth_required),
        "skills": skills,
    }


def _served_by(base_url: str, *, auth_required: bool) -> dict[str, Any]:
    """What every card of this server says alike: provider, capabilities, security, modes."""
    return {
        "provider": {"organization": "Caxton", "url": base_url},
        "capabilities": {
            "streaming": True,
            "pushNotifications": False,
            "extendedAgentCard": False,
        },
        **security_schemes(auth_required),
        "defaultInputModes": MODES,
        "defaultOutputModes": MODES,
    }


def server_card(
    agents: Sequence[CardFacts], *, base_url: str, version: str, auth_required: bool
) -> dict[str, Any]:
    """The server's card: an A2A card whose skills are its agents and whose interfaces are
    theirs (each JSON-RPC at ``/a2a/{name}``), plus ``agents``: every agent's own card (an
    extra key A2A clients ignore). A client picks an agent and reads that agent's card."""
    cards = [agent_card(a, base_url=base_url, auth_required=auth_required) for a in agents]
    return {
        "name": "Caxton",
        "description": "A Caxton multi-agent server; each skill is one of its agents, reached "
        "at /a2a/{name} (its card: /a2a/{name}/.well-known/agent-card.json)",
        "version": version,
        "supportedInterfaces": [i for card in cards for i in card["supportedInterfaces"]],
        **_served_by(base_url, auth_required=auth_required),
        "skills": [
            {
                "id": a.name,
                "name": a.name,
                "description": a.description or f"Caxton {a.kind} agent {a.name}",
                "tags": [a.kind, *a.capabilities],
            }
            for a in agents
        ],
        "agents": cards,
    }
