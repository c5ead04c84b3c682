"""The operator console served at ``/ui`` (issue #20).

Static pages (plain HTML, CSS and JavaScript modules shipped inside the package under
``static/``, no build step) that talk to the server through the same ``/api/v1`` routes and
WebSockets as any client, with the credential the operator signs in with.

- :mod:`~caxton.http.console.assets` finds and labels the files;
- :mod:`~caxton.http.console.routes` serves them with a strict Content-Security-Policy (the
  server passes its table to ``create_app``: the page is not part of the JSON API);
- :mod:`~caxton.http.console.api` adds the three small JSON routes the pages need that the API
  did not have (who am I, an agent's definition as loaded, the server's figures).
"""
