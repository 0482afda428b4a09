"""The errors of the review domain, each with a message written for the reviewer.

``labeller/`` turns them into HTTP answers: ReviewError 400, NotFoundError 404, ForbiddenError 403.
"""

from __future__ import annotations


class ReviewError(ValueError):
    """A malformed review request; the message is written for the reviewer."""


class NotFoundError(LookupError):
    """Something the request names does not exist (a cell, a year without scene, a decision)."""


class ForbiddenError(PermissionError):
    """The request acts on something that belongs to another reviewer (e.g. their decision)."""
