"""The registry core: versions, lifecycle states, blue-green swaps, canary, promote, rollback."""

from __future__ import annotations

import uuid

import pytest

from caxton.agents import AnyAgentSpec, parse_agent_spec
from caxton.agents.versions import (
    KEPT_VERSIONS,
    TRANSITIONS,
    AgentNotFound,
    AgentRemoved,
    AgentState,
    DuplicateAgentName,
    InvalidTransition,
    NoCanary,
    NoPreviousVersion,
    StartVersion,
    StatusChanged,
    Step,
    StopVersion,
    TrafficChanged,
    Unchanged,
    VersionBusy,
    VersionNotFound,
    VersionRegistry,
    _Edit,
    canary_bucket,
)
from caxton.errors import Conflict, NotFound, ValidationFailed

RUNNING = AgentState.RUNNING
LOADING = AgentState.LOADING
DRAINING = AgentState.DRAINING
STOPPED = AgentState.STOPPED
FAILED = AgentState.FAILED


def spec(
    version: str = "1.0.0",
    *,
    name: str = "echo",
    source: str = "agents/echo.toml",
    strategy: str = "blue-green",
    canary_percentage: int = 20,
    prompt: str = "",
) -> AnyAgentSpec:
    text = (
        f'name = "{name}"\nversion = "{version}"\nsystem_prompt = "{prompt}"\n'
        f'[deployment]\nstrategy = "{strategy}"\n'
    )
    if strategy == "canary":
        text += f"canary_percentage = {canary_percentage}\n"
    return parse_agent_spec(text, source=source)


def of_type(step: Step, kind: type) -> list:
    return [d for d in step.decisions if isinstance(d, kind)]


def running(*versions: str, name: str = "echo") -> VersionRegistry:
    """A registry where each version was deployed, loaded and its predecessor stopped."""
    registry = VersionRegistry()
    for version in versions:
        step = registry.deploy(spec(version, name=name))
        (start,) = of_type(step, StartVersion)
        step = step.registry.loaded(name, start.revision)
        registry = step.registry
        for stop in of_type(step, StopVersion):
            registry = registry.stopped(name, stop.revision).registry
    return registry


def states(registry: VersionRegistry, name: str = "echo") -> list[tuple[str, AgentState]]:
    return [(e.version, e.state) for e in registry.get(name).entries]


# -- deploy and blue-green -----------------------------------------------------------------------


def test_first_deploy_starts_loading_and_serves_once_loaded():
    step = VersionRegistry().deploy(spec())

    (start,) = of_type(step, StartVersion)
    assert (start.name, start.revision, start.spec.version) == ("echo", 1, "1.0.0")
    assert states(step.registry) == [("1.0.0", LOADING)]
    assert step.registry.get("echo").status is LOADING
    assert step.registry.choose("echo", "conv-1") is None

    step = step.registry.loaded("echo", 1)

    agent = step.registry.get("echo")
    assert agent.active == 1
    assert agent.status is RUNNING
    assert of_type(step, TrafficChanged) == [TrafficChanged(name="echo", active=1, canary=None)]
    chosen = step.registry.choose("echo", "conv-1")
    assert chosen is not None
    assert chosen.version == "1.0.0"


def test_new_version_takes_traffic_only_after_loading_and_the_old_one_drains():
    registry = running("1.0.0")

    step = registry.deploy(spec("1.1.0"))
    loading = step.registry
    assert loading.get("echo").active == 1
    chosen = loading.choose("echo", "c")
    assert chosen is not None
    assert chosen.version == "1.0.0"

    step = loading.loaded("echo", 2)

    assert step.registry.get("echo").active == 2
    assert of_type(step, StopVersion) == [StopVersion(name="echo", revision=1, drain=True)]
    assert states(step.registry) == [("1.0.0", DRAINING), ("1.1.0", RUNNING)]
    stopped = step.registry.stopped("echo", 1)
    assert states(stopped.registry) == [("1.0.0", STOPPED), ("1.1.0", RUNNING)]
    assert of_type(stopped, StatusChanged)[0].new is STOPPED


def test_immediate_strategy_stops_the_old_version_without_draining():
    registry = running("1.0.0")

    step = registry.deploy(spec("2.0.0", strategy="immediate"))
    step = step.registry.loaded("echo", 2)

    assert of_type(step, StopVersion) == [StopVersion(name="echo", revision=1, drain=False)]


def test_a_version_that_fails_to_load_never_replaces_the_serving_one():
    registry = running("1.0.0")

    step = registry.deploy(spec("1.1.0")).registry.load_failed("echo", 2, error="trap in init")

    agent = step.registry.get("echo")
    assert agent.active == 1
    assert agent.status is RUNNING
    failed = agent.entry(2)
    assert failed is not None
    assert (failed.state, failed.error) == (FAILED, "trap in init")
    (change,) = of_type(step, StatusChanged)
    assert (change.old, change.new, change.error) == (LOADING, FAILED, "trap in init")


def test_identical_content_is_not_reloaded():
    registry = running("1.0.0")

    step = registry.deploy(spec("1.0.0"))

    assert step.decisions == (Unchanged(name="echo", revision=1),)
    assert step.registry is registry


def test_same_version_number_with_new_content_is_a_new_revision():
    registry = running("1.0.0")

    step = registry.deploy(spec("1.0.0", prompt="be brief"))

    (start,) = of_type(step, StartVersion)
    assert start.revision == 2


def test_a_newer_deploy_abandons_a_version_still_loading():
    step = running("1.0.0").deploy(spec("1.1.0"))

    step = step.registry.deploy(spec("1.2.0"))

    assert of_type(step, StopVersion) == [StopVersion(name="echo", revision=2, drain=False)]
    # If the abandoned version reports loaded anyway, it is stopped, never activated.
    late = step.registry.loaded("echo", 2)
    assert late.registry.get("echo").active == 1
    assert of_type(late, StopVersion) == [StopVersion(name="echo", revision=2, drain=False)]


def test_only_the_last_five_versions_are_kept():
    registry = running(*(f"1.{minor}.0" for minor in range(8)))

    agent = registry.get("echo")

    assert len(agent.entries) == KEPT_VERSIONS
    assert agent.kept_versions() == ("1.3.0", "1.4.0", "1.5.0", "1.6.0", "1.7.0")
    assert agent.active_entry is not None
    assert agent.active_entry.version == "1.7.0"


def test_versions_view_shows_status_active_and_traffic():
    registry = running("1.0.0", "1.1.0")

    view = registry.get("echo").versions_view()

    assert view == [
        {
            "version": "1.1.0",
            "revision": 2,
            "status": "running",
            "active": True,
            "traffic_percentage": 100.0,
        },
        {
            "version": "1.0.0",
            "revision": 1,
            "status": "stopped",
            "active": False,
            "traffic_percentage": 0.0,
        },
    ]


# -- lifecycle transitions -----------------------------------------------------------------------


def test_invalid_transition_is_refused_with_the_allowed_ones():
    registry = running("1.0.0")

    with pytest.raises(InvalidTransition) as caught:
        registry.stopped("echo", 1)  # running -> stopped must drain first

    assert isinstance(caught.value, Conflict)
    assert str(caught.value) == (
        "agent 'echo' version 1.0.0 (revision 1) cannot go from running to stopped; "
        "from running it can go to: draining, failed"
    )


def test_loaded_twice_is_an_invalid_transition():
    registry = running("1.0.0")

    with pytest.raises(InvalidTransition):
        registry.loaded("echo", 1)


@pytest.mark.parametrize(
    ("old", "new"),
    [(old, new) for old in AgentState for new in AgentState if new not in TRANSITIONS[old]],
)
def test_transition_table_refuses_everything_it_does_not_list(old, new):
    """Drive a version into ``old`` through events, then ask for ``new`` through `_Edit`."""
    registry = running("1.0.0").deploy(spec("1.1.0")).registry  # revision 2 loading
    paths = {
        LOADING: [],
        RUNNING: [("loaded",)],
        DRAINING: [("loaded",), ("deploy",), ("loaded3",)],
        STOPPED: [("load_failed",), ("restart_stop",)],
        FAILED: [("load_failed",)],
    }
    for (event,) in paths[old]:
        if event == "loaded":
            registry = registry.loaded("echo", 2).registry
        elif event == "deploy":
            registry = registry.deploy(spec("1.2.0")).registry
        elif event == "loaded3":
            registry = registry.loaded("echo", 3).registry
        elif event == "load_failed":
            registry = registry.load_failed("echo", 2, error="x").registry
        elif event == "restart_stop":
            registry = registry.stopped("echo", 2).registry
    entry = registry.get("echo").entry(2)
    assert entry is not None
    assert entry.state is old

    with pytest.raises(InvalidTransition):
        _Edit(registry.get("echo")).move(2, new)


def test_a_crashed_version_stays_listed_as_failed():
    registry = running("1.0.0")

    step = registry.crashed("echo", 1, error="wasm trap")

    assert step.registry.get("echo").status is FAILED


# -- canary --------------------------------------------------------------------------------------


def test_canary_bucket_is_deterministic_and_in_range():
    ids = [str(uuid.uuid4()) for _ in range(200)]

    buckets = [canary_bucket(i) for i in ids]

    assert all(0 <= b < 100 for b in buckets)
    assert buckets == [canary_bucket(i) for i in ids]
    assert len(set(buckets)) > 50


def test_canary_takes_its_share_of_conversations_and_keeps_each_one():
    registry = running("1.0.0")
    step = registry.deploy(spec("2.0.0", strategy="canary", canary_percentage=20))
    step = step.registry.loaded("echo", 2)
    registry = step.registry
    agent = registry.get("echo")
    assert agent.active == 1
    assert agent.canary is not None
    assert (agent.canary.version, agent.canary.traffic_percentage) == ("2.0.0", 20)
    assert of_type(step, StopVersion) == []

    conversations = [str(uuid.uuid4()) for _ in range(1000)]
    chosen = [registry.choose("echo", c) for c in conversations]
    on_canary = sum(1 for entry in chosen if entry is not None and entry.version == "2.0.0")

    assert 150 <= on_canary <= 250
    for conversation, first in zip(conversations[:50], chosen[:50], strict=True):
        again = registry.choose("echo", conversation)
        assert again is not None
        assert first is not None
        assert again.revision == first.revision
    assert agent.traffic_percentage(1) == 80
    assert agent.traffic_percentage(2) == 20


def test_first_version_with_canary_strategy_simply_becomes_active():
    step = VersionRegistry().deploy(spec(strategy="canary")).registry.loaded("echo", 1)

    assert step.registry.get("echo").active == 1
    assert step.registry.get("echo").canary is None


def test_set_canary_reloads_a_stopped_version_and_routes_to_it_once_loaded():
    registry = running("1.0.0", "1.1.0")

    step = registry.set_canary("echo", version="1.0.0", traffic_percentage=50)

    assert of_type(step, StartVersion)[0].revision == 1
    assert step.registry.get("echo").canary is None
    step = step.registry.loaded("echo", 1)
    canary = step.registry.get("echo").canary
    assert canary is not None
    assert (canary.revision, canary.traffic_percentage) == (1, 50)


@pytest.mark.parametrize("percentage", [0, -5, 101])
def test_set_canary_refuses_percentages_outside_1_to_100(percentage):
    with pytest.raises(ValidationFailed, match="between 1 and 100"):
        running("1.0.0", "1.1.0").set_canary("echo", version="1.0.0", traffic_percentage=percentage)


def test_set_canary_refuses_the_active_version_and_unknown_versions():
    registry = running("1.0.0", "1.1.0")

    with pytest.raises(VersionBusy, match="already serves stable traffic"):
        registry.set_canary("echo", version="1.1.0", traffic_percentage=10)
    with pytest.raises(VersionNotFound) as caught:
        registry.set_canary("echo", version="9.9.9", traffic_percentage=10)
    assert str(caught.value) == (
        "agent 'echo' has no kept version '9.9.9'; kept versions: 1.0.0, 1.1.0"
    )


def test_a_crashed_canary_stops_taking_traffic():
    registry = running("1.0.0").deploy(spec("2.0.0", strategy="canary", canary_percentage=100))
    registry_ = registry.registry.loaded("echo", 2).registry

    step = registry_.crashed("echo", 2, error="boom")

    assert step.registry.get("echo").canary is None
    chosen = step.registry.choose("echo", "any")
    assert chosen is not None
    assert chosen.revision == 1


# -- promote and rollback ------------------------------------------------------------------------


def canary_registry() -> VersionRegistry:
    step = running("1.0.0").deploy(spec("2.0.0", strategy="canary", canary_percentage=10))
    return step.registry.loaded("echo", 2).registry


def test_promote_makes_the_canary_stable_and_drains_the_old_version():
    step = canary_registry().promote("echo")

    agent = step.registry.get("echo")
    assert (agent.active, agent.canary) == (2, None)
    assert of_type(step, StopVersion) == [StopVersion(name="echo", revision=1, drain=True)]
    assert states(step.registry) == [("1.0.0", DRAINING), ("2.0.0", RUNNING)]


def test_promote_without_canary_says_how_to_start_one():
    with pytest.raises(NoCanary) as caught:
        running("1.0.0").promote("echo")

    assert "has no canary to promote" in str(caught.value)
    assert "POST /api/v1/agents/echo/canary" in str(caught.value)


def test_rollback_without_previous_version_is_a_clear_error():
    with pytest.raises(NoPreviousVersion) as caught:
        running("1.0.0").rollback("echo")

    assert str(caught.value) == (
        "agent 'echo' has no previous version to roll back to (kept versions: 1.0.0); "
        "deploy a fixed version instead"
    )
    assert caught.value.code == "NO_PREVIOUS_VERSION"
    assert caught.value.http_status == 409


def test_rollback_reloads_the_previous_version_then_swaps_back():
    registry = running("1.0.0", "1.1.0")

    step = registry.rollback("echo")

    (start,) = of_type(step, StartVersion)
    assert (start.revision, start.spec.version) == (1, "1.0.0")
    assert step.registry.get("echo").active == 2  # still serving until 1.0.0 has loaded
    step = step.registry.loaded("echo", 1)
    assert step.registry.get("echo").active == 1
    assert of_type(step, StopVersion) == [StopVersion(name="echo", revision=2, drain=True)]


def test_rollback_skips_versions_that_failed_to_load():
    registry = running("1.0.0")
    registry = registry.deploy(spec("1.1.0")).registry.load_failed("echo", 2, error="x").registry
    registry = registry.deploy(spec("1.2.0")).registry.loaded("echo", 3).registry
    registry = registry.stopped("echo", 1).registry

    step = registry.rollback("echo")

    assert of_type(step, StartVersion)[0].spec.version == "1.0.0"


def test_rollback_to_a_named_version():
    registry = running("1.0.0", "1.1.0", "1.2.0")

    step = registry.rollback("echo", to_version="1.0.0")

    assert of_type(step, StartVersion)[0].revision == 1
    with pytest.raises(VersionNotFound):
        registry.rollback("echo", to_version="0.9.0")


def test_rollback_with_a_canary_ends_the_canary():
    step = canary_registry().rollback("echo")

    agent = step.registry.get("echo")
    assert (agent.active, agent.canary) == (1, None)
    assert of_type(step, StopVersion) == [StopVersion(name="echo", revision=2, drain=True)]


def test_rollback_to_a_draining_version_asks_to_wait():
    registry = running("1.0.0").deploy(spec("1.1.0")).registry.loaded("echo", 2).registry

    with pytest.raises(VersionBusy, match="still draining"):
        registry.rollback("echo")


# -- names and files -----------------------------------------------------------------------------


def test_two_files_declaring_one_name_are_refused_naming_both():
    registry = running("1.0.0")

    with pytest.raises(DuplicateAgentName) as caught:
        registry.deploy(spec("1.0.0", source="agents/copy-of-echo.toml"))

    error = caught.value
    assert isinstance(error, Conflict)
    assert error.http_status == 409
    assert "agents/echo.toml" in str(error)
    assert "agents/copy-of-echo.toml" in str(error)
    assert error.details == {
        "name": "echo",
        "existing_source": "agents/echo.toml",
        "new_source": "agents/copy-of-echo.toml",
    }


def test_take_over_lets_another_source_replace_the_owner():
    step = running("1.0.0").deploy(spec("1.1.0", source="<api>"), take_over=True)

    assert step.registry.get("echo").source == "<api>"


def test_removing_a_file_stops_its_agents_and_frees_the_name():
    registry = running("1.0.0")
    registry = registry.deploy(spec(name="other", source="agents/other.toml")).registry

    step = registry.remove_source("agents/echo.toml")

    assert of_type(step, StopVersion) == [StopVersion(name="echo", revision=1, drain=True)]
    assert of_type(step, AgentRemoved) == [AgentRemoved(name="echo")]
    assert set(step.registry.agents) == {"other"}
    assert step.registry.stopped("echo", 1).decisions == ()
    again = step.registry.deploy(spec(source="agents/copy-of-echo.toml"))
    assert of_type(again, StartVersion)


def test_names_from_a_source():
    registry = running("1.0.0")

    assert registry.names_from("agents/echo.toml") == ("echo",)
    assert registry.names_from("agents/none.toml") == ()


def test_unknown_agent_is_not_found_with_the_known_names():
    with pytest.raises(AgentNotFound) as caught:
        running("1.0.0").get("ecko")

    assert isinstance(caught.value, NotFound)
    assert str(caught.value) == "no agent is named 'ecko' (agents: echo)"
