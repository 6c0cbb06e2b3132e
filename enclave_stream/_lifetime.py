"""Objects that own tasks for as long as their ``async with`` block runs.

A :class:`TaskOwner` subclass writes its whole lifetime as one
``@asynccontextmanager`` method running :func:`owned_task_group`, so none
enters a task group by hand.
"""

from __future__ import annotations

__all__ = ["TaskOwner", "owned_task_group"]

import abc
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

_Owner = TypeVar("_Owner", bound="TaskOwner")


@asynccontextmanager
async def owned_task_group() -> AsyncIterator[TaskGroup]:
    """A task group whose tasks live exactly as long as the ``async with`` body.

    Leaving the body, however it ends, cancels the tasks and waits for them.
    The body's own exception leaves unchanged, not wrapped in an
    ``ExceptionGroup``; a cancellation goes through the group (its cancel
    scope may be the one that was cancelled), and an error of a task leaves
    as the group's ``ExceptionGroup`` (with the body's error in it, if both failed).
    """
    error: BaseException | None = None
    try:
        async with anyio.create_task_group() as task_group:
            try:
                yield task_group
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as exc:
                error = exc
            finally:
                task_group.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if error is None:
            raise
        # A task failed too: report both, as a plain task group would.
        raise BaseExceptionGroup(group.message, [error, *group.exceptions]) from None
    if error is not None:
        # Raised outside the except clause, so nothing is chained to it.
        raise error


class TaskOwner(abc.ABC):
    """Enters the subclass's ``_lifetime()`` on ``async with`` and leaves it with the block.

    Entering an owner that is inside its block raises ``RuntimeError``, and so
    does leaving one that was not entered. A subclass declared with
    ``once=True`` (``class EventStream(TaskOwner, once=True)``) can be entered
    only once in all; the others may be entered again after their block.
    """

    _once: bool = False
    # Set while inside the block; the base needs no __init__ of its own.
    __exit_stack: AsyncExitStack | None = None
    __used = False

    def __init_subclass__(cls, *, once: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._once = once

    @abc.abstractmethod
    def _lifetime(self) -> AbstractAsyncContextManager[object]:
        """Runs around the block: start the tasks, ``yield``, then wind them down."""

    async def __aenter__(self: _Owner) -> _Owner:
        name = type(self).__name__
        if self._once and self.__used:
            raise RuntimeError(f"this {name} can be entered only once")
        if self.__exit_stack is not None:
            raise RuntimeError(f"this {name} is already running (inside its `async with` block)")
        self.__used = True
        stack = AsyncExitStack()
        await stack.enter_async_context(self._lifetime())
        self.__exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self.__exit_stack = self.__exit_stack, None
        if stack is None:
            raise RuntimeError(f"{type(self).__name__}.__aexit__ called without __aenter__")
        return await stack.__aexit__(exc_type, exc, tb)
