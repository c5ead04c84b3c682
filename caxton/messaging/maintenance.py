"""The maintenance task of messaging: expire idle conversations on a schedule."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from caxton.errors import CaxtonError

if TYPE_CHECKING:
    from caxton.messaging.conversations import Conversations

LOGGER = logging.getLogger("caxton.maintenance")


class ConversationSweeper:
    """Every ``interval_s``, remove conversations idle past ``messaging.conversation_ttl``.

    The first sweep runs before the task reports started, so conversations that expired while
    the server was down are gone once it is ready.
    """

    def __init__(self, conversations: Conversations, *, interval_s: float) -> None:
        self.conversations = conversations
        self.interval_s = interval_s
        self.sweeps = 0
        self.removed = 0

    async def run(
        self, *, task_status: trio.TaskStatus[ConversationSweeper] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Sweep until cancelled; a failed sweep is logged and tried again next time.

        Cancellation:
            A sweep in progress finishes its write (the store runs it to commit).
        """
        await self.sweep()
        task_status.started(self)
        while True:
            await trio.sleep(self.interval_s)
            await self.sweep()

    async def sweep(self) -> None:
        """One sweep; a failure is logged (the next one tries again)."""
        try:
            self.removed += await self.conversations.sweep()
            self.sweeps += 1
        except CaxtonError as exc:
            LOGGER.warning("conversation sweep failed: %s", exc.message)
