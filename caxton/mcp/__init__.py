"""The Model Context Protocol, both ways (issue #19).

Client side: config agents take tools from MCP servers listed under ``[[mcp_servers]]`` in
their file (:mod:`caxton.mcp.client_spec` validates them, :mod:`caxton.mcp.connections` runs
the sessions of one agent version, :mod:`caxton.mcp.tool_names` names the tools the model is
offered). Server side: ``/mcp`` (:mod:`caxton.mcp.server_routes`) serves the streamable HTTP
transport with every running agent and memory search/store as tools, and ``caxton mcp``
(:mod:`caxton.mcp.stdio_proxy`) carries the same over stdio for desktop and IDE clients.

The SDK is the ``mcp`` package (1.x: written against anyio, run here on its trio backend).
"""
