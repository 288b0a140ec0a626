"""Objects built from config nodes: their constructor's arguments are their description.

Constructors are the config schema and store every argument under its own name, so a log line
(``repr``) and a rebuilt copy (``rebuilt``) both come from the constructor's signature: no
class writes its own ``__repr__``. A constructor that forwards ``**options`` to its parent's
contributes the parent's arguments too.
"""

from __future__ import annotations

import inspect
from typing import Any

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class Configured:
    """Mixin: ``arguments()``, ``rebuilt(**changes)`` and ``repr`` from the constructor."""

    # Arguments stored under their name that a log line should not print (loaded data).
    unshown: tuple[str, ...] = ()

    def arguments(self) -> dict[str, Any]:
        """The constructor's arguments, as stored (``forwarded **options`` included)."""
        names: list[str] = []
        for cls in type(self).__mro__:
            init = cls.__dict__.get("__init__")
            if init is None or cls is object:
                continue
            parameters = list(inspect.signature(init).parameters.values())[1:]  # no self
            names += [p.name for p in parameters if p.kind in _NAMED]
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
                break
        return {name: getattr(self, name) for name in dict.fromkeys(names) if hasattr(self, name)}

    def rebuilt(self, **changes: Any) -> Any:
        """A new object of this class from the same arguments with ``changes`` (validated by
        the constructor like any other)."""
        return type(self)(**{**self.arguments(), **changes})

    def __repr__(self) -> str:
        shown = [f"{k}={v!r}" for k, v in self.arguments().items() if k not in self.unshown]
        return f"{type(self).__name__}({', '.join(shown)})"
