"""Who may open the example's sockets."""

from pgobserve import permissions


class LoggedIn(permissions.IsAuthenticated):
    """``IsAuthenticated``, checked at the handshake too: an anonymous socket is refused
    before it joins any group (``IsAuthenticated`` alone, as in DCRF, lets it connect and
    answers 403 to each action)."""

    async def can_connect(self, scope, consumer, message=None) -> bool:
        return await self.has_permission(scope, consumer, "connect")
