"""The Qdrant memory store (issue #16): its start errors, its layout in the collections, and its
503s while Qdrant does not answer.

The memory contract tests run on Qdrant through the ``backend`` fixture (local mode, and a real
server when ``QDRANT_URL`` is set). No Qdrant server can be installed here, so what needs one
answering over HTTP runs against :class:`FakeQdrant`, a loopback stand-in that answers the few
requests of a start and of a count with what qdrant-client's own models make; what needs a real
server's behaviour is in the ``QDRANT_URL`` tests.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING

import pytest
import trio

from caxton.memory import MemoryService, NewEntity, NewRelation, qdrant_memory
from caxton.store.errors import (
    MemoryUnavailable,
    QdrantPathLocked,
    QdrantUnreachable,
    QdrantVectorSizeMismatch,
)
from caxton.store.qdrant import DOWN_PROBE_INTERVAL_S, RELATIONS_SUFFIX, QdrantStore

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.trio

QDRANT_URL = os.environ.get("QDRANT_URL")
needs_server = pytest.mark.skipif(
    not QDRANT_URL, reason="no Qdrant server: set QDRANT_URL to run this test against one"
)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_collection_of_another_vector_size_fails_the_start_naming_both(
    nursery, tmp_path: Path
):
    with trio.fail_after(30):
        async with trio.open_nursery() as first:
            await first.start(QdrantStore(path=tmp_path / "q", vector_size=384).run)
            first.cancel_scope.cancel()
        with pytest.raises(QdrantVectorSizeMismatch) as caught:
            await nursery.start(QdrantStore(path=tmp_path / "q", vector_size=768).run)
    message = caught.value.message
    assert "384" in message
    assert "768" in message
    assert "'caxton-memory'" in message
    assert caught.value.details["existing"] == 384
    assert caught.value.details["configured"] == 768


async def test_an_unreachable_url_fails_the_start_within_the_timeout_naming_it(nursery):
    url = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with trio.fail_after(10), pytest.raises(QdrantUnreachable) as caught:
        await nursery.start(QdrantStore(url=url, timeout_s=2.0).run)
    assert time.monotonic() - started < 2.5
    assert url in caught.value.message
    assert caught.value.code == "QDRANT_UNREACHABLE"


async def test_a_url_that_never_answers_fails_the_start_at_the_timeout(nursery):
    """A server that accepts connections but never answers: the start gives up at the
    timeout, not at the client's own (per-phase) timeouts added up."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with trio.fail_after(10), pytest.raises(QdrantUnreachable) as caught:
            await nursery.start(QdrantStore(url=url, timeout_s=1.0).run)
        assert time.monotonic() - started < 1.8
    assert url in caught.value.message


async def test_the_local_folder_serves_one_process(nursery, tmp_path: Path):
    with trio.fail_after(30):
        await nursery.start(QdrantStore(path=tmp_path / "q").run)
        with pytest.raises(QdrantPathLocked, match="in use by another process"):
            await nursery.start(QdrantStore(path=tmp_path / "q").run)


async def test_entities_and_relations_are_points_keyed_by_name(nursery, tmp_path, embedder):
    from qdrant_client import QdrantClient

    with trio.fail_after(60):
        async with trio.open_nursery() as inner:
            store = await inner.start(QdrantStore(path=tmp_path / "q").run)
            assert (store.dialect, store.shared) == ("qdrant", False)
            memory = await inner.start(
                MemoryService(store, embedder, sql=qdrant_memory, max_entities=10).run
            )
            await memory.create_entities(
                [
                    NewEntity(name="Whiskers", entity_type="pet", observations=["a cat", "naps"]),
                    NewEntity(name="Rex", entity_type="pet", observations=["a dog"]),
                ]
            )
            await memory.create_relation(
                NewRelation(source="Whiskers", target="Rex", relation_type="chases")
            )
            inner.cancel_scope.cancel()
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        (point,) = client.retrieve("caxton-memory", [qdrant_memory.entity_id("Whiskers")])
        assert point.id == str(uuid.uuid5(qdrant_memory.ENTITY_NAMESPACE, "Whiskers"))
        payload = point.payload or {}
        assert payload["name"] == "Whiskers"
        assert payload["entity_type"] == "pet"
        assert payload["scope"] == "global"
        assert payload["observations"] == ["a cat", "naps"]
        assert payload["created_at"].endswith("+00:00")
        info = client.get_collection("caxton-memory")
        assert info.config.params.vectors.size == 384
        assert info.config.params.vectors.distance.value == "Cosine"
        relations = client.scroll("caxton-memory" + RELATIONS_SUFFIX)[0]
        assert [r.payload["relation_type"] for r in relations] == ["chases"]
        assert relations[0].id == qdrant_memory.relation_id(("Whiskers", "Rex", "chases"))
    finally:
        client.close()


async def test_deleting_an_entity_deletes_its_relations_and_keeps_the_others(
    nursery, tmp_path, embedder
):
    with trio.fail_after(60):
        store = await nursery.start(QdrantStore(path=tmp_path / "q").run)
        memory = await nursery.start(MemoryService(store, embedder, sql=qdrant_memory).run)
        await memory.create_entities(
            [NewEntity(name=n, entity_type="t", observations=[n]) for n in ("a", "b", "c")]
        )
        for source, target in (("a", "b"), ("b", "c"), ("c", "a")):
            await memory.create_relation(
                NewRelation(source=source, target=target, relation_type="next")
            )
        # what is read back is what was written (a shared store's re-plan check compares them)
        created = await memory.create_entity(
            NewEntity(
                name="d",
                entity_type="t",
                observations=["one", "two"],
                scope="agent",
                agent="bot",
                metadata={"n": 1, "x": 0.5, "tags": ["a"], "nested": {"k": None}},
            )
        )
        found = await store.execute_fn(lambda c: qdrant_memory.fetch_entities(c, ["d", "zz"]))
        assert found == {"d": created}
        assert await memory.delete_entity("d") == 0
        assert await memory.delete_entity("a") == 2
        stats = await memory.stats()
        assert (stats.entity_count, stats.relation_count) == (2, 1)
        graph = await memory.graph("b", max_depth=3)
        assert [n.name for n in graph.nodes] == ["b", "c"]
        assert [(e.source, e.target) for e in graph.edges] == [("b", "c")]


# -- a server that stops answering -----------------------------------------------------------


def _collection_json(vectors: bool, indexed: tuple[str, ...]) -> dict[str, object]:
    """A collection's description as a Qdrant server sends it, made by qdrant-client's models."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(":memory:")
    try:
        client.create_collection(
            "c",
            vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
            if vectors
            else {},
        )
        info = client.get_collection("c").model_dump(mode="json", exclude_none=True)
    finally:
        client.close()
    info["payload_schema"] = {name: {"data_type": "keyword", "points": 0} for name in indexed}
    return info


class FakeQdrant:
    """Loopback HTTP answering a start (the version, both collections with their indexes) and
    point counts, one request per connection; ``stop()`` closes the port (connections refused),
    ``run`` again on the same port brings it back."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[str] = []
        self.entities = _collection_json(True, ("name", "entity_type", "scope", "agent"))
        self.relations = _collection_json(False, ("from_entity", "to_entity", "relation_type"))

    async def run(self, *, task_status: trio.TaskStatus[FakeQdrant]) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self.handle, listeners)

    def answer(self, method: str, path: str) -> object:
        if path == "/":
            return {"title": "qdrant - vector search engine", "version": "1.15.0"}
        parts = path.split("?")[0].strip("/").split("/")
        if parts[-1] == "exists":
            return {"result": {"exists": True}, "status": "ok", "time": 0.0}
        if parts[-1] == "count":
            return {"result": {"count": 0}, "status": "ok", "time": 0.0}
        if method == "GET" and len(parts) == 2:
            info = self.relations if parts[1].endswith(RELATIONS_SUFFIX) else self.entities
            return {"result": info, "status": "ok", "time": 0.0}
        raise AssertionError(f"the fake has no answer to {method} {path}")

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(body) < length:
            body += await stream.receive_some(65536)
        method, path, _ = lines[0].split(" ", 2)
        self.requests.append(f"{method} {path}")
        content = json.dumps(self.answer(method, path)).encode()
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(content), content)
        )
        await stream.aclose()


async def test_a_server_that_stops_answering_gives_fast_503s_then_recovers(nursery):
    fake = FakeQdrant()
    with trio.fail_after(30):
        async with trio.open_nursery() as server:
            await server.start(fake.run)
            store = await nursery.start(
                QdrantStore(url=f"http://127.0.0.1:{fake.port}", timeout_s=5.0).run
            )
            assert store.shared
            assert await store.execute_fn(qdrant_memory.entity_count) == 0
            await store.ping()
            server.cancel_scope.cancel()
        with pytest.raises(MemoryUnavailable) as caught:
            await store.execute_fn(qdrant_memory.entity_count)
        assert caught.value.code == "MEMORY_UNAVAILABLE"
        assert caught.value.http_status == 503
        assert f"127.0.0.1:{fake.port}" in caught.value.message
        # known down: the next calls fail at once, without a request, until the probe time
        before = store.statistics().unavailable_total
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(MemoryUnavailable, match="trying again every"):
                await store.ping()
        assert time.monotonic() - started < 0.5
        assert store.statistics().unavailable_total == before + 20
        # back: the first probe after the interval finds it, and calls are served again
        await nursery.start(fake.run)
        await trio.sleep(DOWN_PROBE_INTERVAL_S)
        await store.ping()
        assert await store.execute_fn(qdrant_memory.relation_count) == 0


# -- a real server -----------------------------------------------------------------------------


@needs_server
async def test_a_real_server_gets_the_collections_and_their_payload_indexes(nursery):
    from qdrant_client import QdrantClient

    assert QDRANT_URL is not None
    api_key = os.environ.get("QDRANT_API_KEY")
    name = f"caxton-test-{uuid.uuid4().hex[:12]}"
    client = QdrantClient(url=QDRANT_URL, api_key=api_key, check_compatibility=False)
    try:
        with trio.fail_after(30):
            store = await nursery.start(
                QdrantStore(url=QDRANT_URL, api_key=api_key, collection=name).run
            )
            await store.ping()
        schema = client.get_collection(name).payload_schema
        assert {"name", "entity_type", "scope"} <= set(schema)
        assert {"from_entity", "to_entity"} <= set(
            client.get_collection(name + RELATIONS_SUFFIX).payload_schema
        )
    finally:
        for collection in (name, name + RELATIONS_SUFFIX):
            client.delete_collection(collection)
        client.close()


# -- the server ----------------------------------------------------------------------------------


async def test_a_server_on_memory_backend_qdrant_keeps_memory_in_its_own_store(nursery, tmp_path):
    import functools

    import httpx
    from servers import loopback_config

    from caxton.server import serve

    loaded = loopback_config(
        tmp_path / "data",
        memory__backend="qdrant",
        memory__qdrant_config__path="qdrant-data",
    )
    with trio.fail_after(60):
        info = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
        services = info.services
        memory_store = services.memory.store
        assert isinstance(memory_store, QdrantStore)
        assert memory_store is not services.store
        assert memory_store.path == tmp_path / "data" / "qdrant-data"
        states = {s.name: s.state.value for s in services.components.statistics()}
        assert states["memory_store"] == "running"
        await services.memory.create_entity(
            NewEntity(name="Whiskers", entity_type="pet", observations=["a cat on the sofa"])
        )
        async with httpx.AsyncClient(base_url=info.api_urls[0]) as client:
            assert (await client.get("/ready")).status_code == 200
            health = (await client.get("/api/v1/health")).json()
        assert health["memory"]["backend"] == "qdrant"
        assert "available" not in health["memory"]
        hits = await services.memory.search("kitten on a couch", limit=1)
        assert [h.entity.name for h in hits] == ["Whiskers"]
        assert await memory_store.execute_fn(qdrant_memory.entity_count) == 1
        info.stop()


async def test_a_server_whose_qdrant_stops_answering_is_not_ready_but_keeps_serving(
    nursery, tmp_path
):
    """Memory calls and /ready answer 503 MEMORY_UNAVAILABLE while Qdrant is down; what does not
    use memory keeps answering; both recover by themselves when Qdrant is back."""
    import functools

    import httpx
    from servers import loopback_config

    from caxton.server import serve

    fake = FakeQdrant()
    with trio.fail_after(60):
        async with trio.open_nursery() as qdrant:
            await qdrant.start(fake.run)
            loaded = loopback_config(
                tmp_path / "data",
                memory__backend="qdrant",
                memory__qdrant_config__url=f"http://127.0.0.1:{fake.port}",
                memory__qdrant_config__timeout="3s",
            )
            info = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
            async with httpx.AsyncClient(base_url=info.api_urls[0]) as client:
                assert (await client.get("/ready")).status_code == 200
                assert (await client.get("/api/v1/memory/capacity")).status_code == 200
                qdrant.cancel_scope.cancel()
        async with httpx.AsyncClient(base_url=info.api_urls[0]) as client:
            started = time.monotonic()
            ready = await client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["error"]["details"] == {"cause": "MEMORY_UNAVAILABLE"}
            assert "127.0.0.1" not in ready.text  # a public route names no server
            capacity = await client.get("/api/v1/memory/capacity")
            assert capacity.status_code == 503
            assert capacity.json()["error"]["code"] == "MEMORY_UNAVAILABLE"
            assert time.monotonic() - started < 1.0
            assert (await client.get("/api/v1/agents")).status_code == 200
            health = (await client.get("/api/v1/health")).json()
            assert health["status"] == "degraded"
            assert health["memory"]["error"] == "MEMORY_UNAVAILABLE"
            await nursery.start(fake.run)
            await trio.sleep(DOWN_PROBE_INTERVAL_S)
            assert (await client.get("/ready")).status_code == 200
            assert (await client.get("/api/v1/memory/capacity")).status_code == 200
        info.stop()
