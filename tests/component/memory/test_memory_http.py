"""The memory routes of a server running in this process, over real loopback sockets.

Each server start loads the real embedding model, so each test starts one server and checks
several things against it.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING

import httpx
import trio
from servers import loopback_config

from caxton.memory.validation import MAX_OBSERVATION_BYTES
from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from pathlib import Path

CAT = {
    "name": "Whiskers",
    "entity_type": "pet",
    "observations": ["a small cat that sleeps on the sofa", "likes chasing mice"],
}
STOCKS = {
    "name": "NASDAQ",
    "entity_type": "market",
    "observations": ["stock exchange where shares are traded", "prices fell sharply"],
}
OWNER = {"name": "Ada", "entity_type": "person", "observations": ["owns a cat"]}


async def start_server(nursery: trio.Nursery, data_dir: Path, **extra: object) -> ServerInfo:
    loaded = loopback_config(data_dir, **extra)
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    return info


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == code, error
    assert error["request_id"] == response.headers["X-Request-ID"]
    return dict(error)


async def test_entities_relations_search_graph_and_their_errors(server: ServerInfo) -> None:
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
            batch = await client.post("/api/v1/memory/entities", json={"entities": [STOCKS, CAT]})
            assert batch.status_code == 201, batch.text
            assert [e["name"] for e in batch.json()["entities"]] == ["NASDAQ", "Whiskers"]
            single = await client.post("/api/v1/memory/entities", json=OWNER)
            assert single.status_code == 201
            assert single.json()["name"] == "Ada"
            assert single.json()["scope"] == "global"

            fetched = (await client.get("/api/v1/memory/entities/Whiskers")).json()
            assert fetched["observations"] == CAT["observations"]
            assert fetched["entity_type"] == "pet"

            found = await client.get(
                "/api/v1/memory/search", params={"q": "a kitten on a rug", "limit": 2}
            )
            assert found.status_code == 200, found.text
            hits = found.json()["results"]
            assert [h["name"] for h in hits] == ["Whiskers", "Ada"]
            assert hits[0]["similarity"] > hits[1]["similarity"]
            markets = await client.get(
                "/api/v1/memory/search",
                params={"q": "a kitten on a rug", "entity_types": "market, person"},
            )
            assert [h["name"] for h in markets.json()["results"]] == ["Ada", "NASDAQ"]
            strict = await client.get(
                "/api/v1/memory/search", params={"q": "a kitten on a rug", "min_similarity": 0.99}
            )
            assert strict.json()["results"] == []

            search = "/api/v1/memory/search"
            error_of(await client.get(search), 400, "BAD_REQUEST")
            error_of(
                await client.get(search, params={"q": "x", "limit": "ten"}), 400, "BAD_REQUEST"
            )
            error_of(
                await client.get(search, params={"q": "x", "limit": 0}), 422, "VALIDATION_ERROR"
            )
            error_of(
                await client.get(search, params={"q": "x", "scope": "galaxy"}),
                422,
                "VALIDATION_ERROR",
            )
            error_of(await client.get(search, params={"q": "  "}), 422, "VALIDATION_ERROR")

            clash = await client.post(
                "/api/v1/memory/entities", json={**CAT, "entity_type": "person"}
            )
            assert "Whiskers" in error_of(clash, 409, "CONFLICT")["message"]
            entities = "/api/v1/memory/entities"
            json_type = {"Content-Type": "application/json"}
            garbled = await client.post(entities, content=b"{not json", headers=json_type)
            error_of(garbled, 400, "BAD_REQUEST")
            error_of(await client.post(entities, json=["Whiskers"]), 400, "BAD_REQUEST")
            error_of(await client.post(entities, json={"name": "x"}), 422, "VALIDATION_ERROR")
            unknown = await client.post(entities, json={**OWNER, "colour": "red"})
            assert "colour" in error_of(unknown, 422, "VALIDATION_ERROR")["message"]
            error_of(
                await client.post(entities, json={**OWNER, "observations": "one string"}),
                422,
                "VALIDATION_ERROR",
            )
            error_of(await client.post(entities, json={"entities": []}), 422, "VALIDATION_ERROR")
            error_of(
                await client.post(entities, json={"entities": [CAT, {"name": 3}]}),
                422,
                "VALIDATION_ERROR",
            )

            relation = {"from": "Whiskers", "to": "Ada", "relation_type": "owned_by"}
            missing = await client.post(
                "/api/v1/memory/relations", json={**relation, "to": "Nobody"}
            )
            assert error_of(missing, 404, "NOT_FOUND")["details"] == {"name": "Nobody", "end": "to"}
            made = await client.post("/api/v1/memory/relations", json={**relation, "strength": 0.8})
            assert made.status_code == 201, made.text
            assert made.json()["strength"] == 0.8
            error_of(
                await client.post("/api/v1/memory/relations", json={**relation, "strength": 2}),
                422,
                "VALIDATION_ERROR",
            )

            graph = (await client.get("/api/v1/memory/graph/Ada", params={"max_depth": 1})).json()
            assert graph["root"] == "Ada"
            assert {(n["name"], n["depth"]) for n in graph["nodes"]} == {
                ("Ada", 0),
                ("Whiskers", 1),
            }
            assert graph["edges"] == [
                {"from": "Whiskers", "to": "Ada", "relation_type": "owned_by", "strength": 0.8}
            ]
            error_of(
                await client.get("/api/v1/memory/graph/Ada", params={"max_depth": 0}),
                422,
                "VALIDATION_ERROR",
            )
            error_of(await client.get("/api/v1/memory/graph/Nobody"), 404, "NOT_FOUND")

            observations = "/api/v1/memory/entities/Whiskers/observations"
            added = await client.post(observations, json={"observations": ["naps on a rug"]})
            assert added.status_code == 200, added.text
            assert added.json()["observations"][-1] == "naps on a rug"
            error_of(
                await client.post(observations, json={"observations": []}), 422, "VALIDATION_ERROR"
            )
            too_long = await client.post(
                observations, json={"observations": ["x" * (MAX_OBSERVATION_BYTES + 1)]}
            )
            assert "32 KiB" in error_of(too_long, 422, "VALIDATION_ERROR")["message"]
            error_of(
                await client.post(observations, json={"observations": "x"}), 422, "VALIDATION_ERROR"
            )
            garbled = await client.post(
                observations, content=b"observations", headers={"Content-Type": "application/json"}
            )
            error_of(garbled, 400, "BAD_REQUEST")
            error_of(
                await client.post(
                    "/api/v1/memory/entities/Nobody/observations", json={"observations": ["x"]}
                ),
                404,
                "NOT_FOUND",
            )
            after = (await client.get("/api/v1/memory/entities/Whiskers")).json()
            assert after["observations"] == [*CAT["observations"], "naps on a rug"]

            deleted = await client.delete("/api/v1/memory/entities/Whiskers")
            assert deleted.json() == {"deleted": "Whiskers", "relations_removed": 1}
            error_of(await client.get("/api/v1/memory/entities/Whiskers"), 404, "NOT_FOUND")
            error_of(await client.delete("/api/v1/memory/entities/Whiskers"), 404, "NOT_FOUND")
            again = await client.get("/api/v1/memory/search", params={"q": "a kitten on a rug"})
            assert "Whiskers" not in [h["name"] for h in again.json()["results"]]


async def test_reports_transfer_limits_and_maintenance(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(60):
        server = await start_server(nursery, tmp_path / "data", memory__max_entities=3)
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
            created = await client.post(
                "/api/v1/memory/entities", json={"entities": [CAT, STOCKS, OWNER]}
            )
            assert created.status_code == 201, created.text
            relation = {"from": "Whiskers", "to": "Ada", "relation_type": "owned_by"}
            assert (await client.post("/api/v1/memory/relations", json=relation)).status_code == 201

            full = await client.post(
                "/api/v1/memory/entities", json={"name": "Rex", "entity_type": "pet"}
            )
            details = error_of(full, 507, "MEMORY_LIMIT_EXCEEDED")["details"]
            assert details == {"current": 3, "adding": 1, "max_entities": 3}
            error_of(await client.get("/api/v1/memory/entities/Rex"), 404, "NOT_FOUND")

            capacity = (await client.get("/api/v1/memory/capacity")).json()
            assert capacity["entity_count"] == 3
            assert capacity["max_entities"] == 3
            assert capacity["used_ratio"] == 1.0
            assert capacity["warning"] is True

            for _ in range(2):
                await client.get("/api/v1/memory/search", params={"q": "a kitten on a rug"})
            stats = (await client.get("/api/v1/memory/stats")).json()
            assert stats["backend"] == "duckdb"
            assert stats["entity_count"] == 3
            assert stats["relation_count"] == 1
            assert stats["observation_count"] == 5
            assert stats["entities_by_type"] == {"pet": 1, "market": 1, "person": 1}
            assert stats["db_size_bytes"] > 0
            assert stats["search"]["searches_total"] == 2
            assert 0 < stats["search_p50_ms"] <= stats["search_p99_ms"]
            assert stats["cache_hit_rate"] == 0.5  # the second search reused the query vector
            assert stats["embedder"]["load_ms"] > 0
            assert stats["embedder"]["runtime"].startswith("openvino ")
            assert stats["embedder"]["average_encode_ms"] > 0
            assert stats["store"]["open"] is True
            assert 0.0 <= stats["database"]["fragmentation"] <= 1.0
            assert stats["process_memory_bytes"] > 0

            exported = await client.get("/api/v1/memory/export")
            assert exported.headers["content-type"].startswith("application/json")
            document = exported.json()
            assert [e["name"] for e in document["entities"]] == ["Ada", "NASDAQ", "Whiskers"]
            assert document["metadata"]["entity_count"] == 3
            assert document["relations"][0]["from"] == "Whiskers"
            jsonl = await client.get("/api/v1/memory/export", params={"format": "jsonl"})
            lines = [json.loads(line) for line in jsonl.text.splitlines()]
            assert [r["kind"] for r in lines] == ["metadata", *["entity"] * 3, "relation"]
            assert lines[0]["relation_count"] == 1
            error_of(
                await client.get("/api/v1/memory/export", params={"format": "xml"}),
                400,
                "BAD_REQUEST",
            )

            # Nothing of a truncated or invalid import is written.
            assert (await client.delete("/api/v1/memory/entities/Whiskers")).status_code == 200
            cut_json = exported.content[: len(exported.content) // 2]
            imports = "/api/v1/memory/import"
            error_of(
                await client.post(
                    imports, content=cut_json, headers={"Content-Type": "application/json"}
                ),
                400,
                "BAD_REQUEST",
            )
            cut_jsonl = "".join(jsonl.text.splitlines(keepends=True)[:-2])
            truncated = await client.post(
                imports, content=cut_jsonl, headers={"Content-Type": "application/x-ndjson"}
            )
            assert "truncated" in error_of(truncated, 422, "VALIDATION_ERROR")["message"]
            error_of(
                await client.post(imports, params={"merge_strategy": "merge"}, json=document),
                422,
                "VALIDATION_ERROR",
            )
            conflict = await client.post(
                imports, params={"merge_strategy": "error_on_conflict"}, json=document
            )
            error_of(conflict, 409, "CONFLICT")
            error_of(await client.get("/api/v1/memory/entities/Whiskers"), 404, "NOT_FOUND")
            assert (await client.get("/api/v1/memory/stats")).json()["relation_count"] == 0

            restored = await client.post(
                imports, content=jsonl.content, headers={"Content-Type": "application/x-ndjson"}
            )
            assert restored.status_code == 200, restored.text
            assert restored.json() == {
                "merge_strategy": "update_existing",
                "entities_created": 1,
                "entities_updated": 2,
                "entities_skipped": 0,
                "relations_created": 1,
                "relations_updated": 0,
                "relations_skipped": 0,
                "entity_count": 3,
            }
            skipped = await client.post(
                imports, params={"merge_strategy": "skip_existing"}, json=document
            )
            assert skipped.json()["entities_skipped"] == 3
            assert (await client.get("/api/v1/memory/entities/Whiskers")).json()[
                "observations"
            ] == CAT["observations"]
            hits = (
                await client.get("/api/v1/memory/search", params={"q": "a kitten on a rug"})
            ).json()["results"]
            assert hits[0]["name"] == "Whiskers"

            optimized = await client.post("/api/v1/memory/optimize")
            assert optimized.status_code == 200, optimized.text
            report = optimized.json()
            assert (report["vacuumed"], report["analyzed"], report["reindexed"]) == (
                True,
                True,
                True,
            )
            assert report["index_rows"] == 3
            only = (await client.post("/api/v1/memory/optimize", json={"analyze": True})).json()
            assert (only["vacuumed"], only["analyzed"], only["reindexed"]) == (False, True, False)
            error_of(
                await client.post("/api/v1/memory/optimize", json={"vacuum": "yes"}),
                422,
                "VALIDATION_ERROR",
            )
            error_of(
                await client.post("/api/v1/memory/optimize", json={"defrag": True}),
                422,
                "VALIDATION_ERROR",
            )

            cleared = (await client.post("/api/v1/memory/cache/clear", json={})).json()
            assert cleared["cleared_entries"] >= 1
            assert cleared["rebuilt"] is False
            rebuilt = (
                await client.post("/api/v1/memory/cache/clear", json={"rebuild": True})
            ).json()
            assert rebuilt == {"cleared_entries": 0, "rebuilt": True, "index_rows": 3}
            error_of(
                await client.post("/api/v1/memory/cache/clear", json={"rebuild": 1}),
                422,
                "VALIDATION_ERROR",
            )


async def test_memory_metrics_are_exposed(server) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        created = await client.post(
            "/api/v1/memory/entities",
            json={"name": "Whiskers", "entity_type": "pet", "observations": ["a small cat"]},
        )
        assert created.status_code == 201
        for _ in range(2):
            assert (await client.get("/api/v1/memory/search", params={"q": "cat"})).is_success
        owner = {"name": "Ada", "entity_type": "person", "observations": ["feeds the cat"]}
        assert (await client.post("/api/v1/memory/entities", json=owner)).status_code == 201
        link = {"from": "Whiskers", "to": "Ada", "relation_type": "owned_by"}
        assert (await client.post("/api/v1/memory/relations", json=link)).status_code == 201
        assert (await client.post("/api/v1/memory/relations", json=link)).is_success  # update
        text = (await client.get(server.metrics_url)).text
        assert (await client.delete("/api/v1/memory/entities/Ada")).is_success
        after = (await client.get(server.metrics_url)).text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("caxton_memory_") and " " in line and not line.startswith("#")
    }
    assert values["caxton_memory_entities_total"] == 2.0
    assert values['caxton_memory_backend_info{backend="duckdb"}'] == 1.0
    assert values["caxton_memory_relations_total"] == 1.0
    assert "caxton_memory_relations_total 0.0" in after  # deleted with its entity
    assert values["caxton_memory_search_latency_p99"] > 0
    assert values["caxton_memory_sqlite_size_bytes"] > 0
    assert values["caxton_memory_cache_hit_rate"] == 0.5  # the second search hit the cache
    assert values["caxton_memory_search_duration_seconds_count"] == 2.0
