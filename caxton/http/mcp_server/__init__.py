"""Caxton as an MCP server: ``POST /mcp``, the streamable HTTP transport (issue #19 item 2).

:mod:`~caxton.http.mcp_server.jsonrpc` parses and answers JSON-RPC (pure),
:mod:`~caxton.http.mcp_server.tools` holds the tools (each running agent, memory search and
store) and :mod:`~caxton.http.mcp_server.endpoint` is the route. ``caxton mcp`` carries the same
over stdio for desktop and IDE clients (:mod:`caxton.cli.mcp_proxy`).
"""
