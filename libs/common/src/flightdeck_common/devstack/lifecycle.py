"""``with server:`` for everything the devstack starts and stops."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self


class StartStop:
    """Mixin: ``__enter__`` calls ``start()``, ``__exit__`` calls ``stop()``."""

    def start(self, *args: Any, **kwargs: Any) -> Self:
        raise NotImplementedError

    def stop(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
