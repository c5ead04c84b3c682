"""API security: who is calling (keys, tokens), what they may do (roles), how often (rate
limits), from where (CORS), and the audit trail of what changed.

The cores are pure: key files, tokens, role decisions, the token bucket and CORS answers are
functions over frozen values. :mod:`caxton.security.gate` holds the running state and
:mod:`caxton.http.guard` plugs it into the HTTP app.
"""

from caxton.security.errors import Forbidden, KeyFileError, RateLimited, Unauthenticated

__all__ = ["Forbidden", "KeyFileError", "RateLimited", "Unauthenticated"]
