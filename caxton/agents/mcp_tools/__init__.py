"""MCP servers as tools of config agents (issue #19 item 1).

Config agents take tools from the MCP servers listed under ``[[mcp_servers]]`` in their file:
:mod:`~caxton.agents.mcp_tools.spec` checks the tables, :mod:`~caxton.agents.mcp_tools.connections`
runs the sessions of one agent version (a stdio server is a child process of that version) and
:mod:`~caxton.agents.mcp_tools.names` names the tools so that LLM providers accept them. The
other direction, Caxton as an MCP server, is :mod:`caxton.http.mcp_server` and ``caxton mcp``.

The SDK is the ``mcp`` package (1.x: written against anyio, run here on its trio backend).
"""
