"""Binding a call to its function's signature at ``submit``, as upstream does.

A call that cannot bind (a missing argument, an unknown keyword, too many arguments)
raises ``TypeError`` from ``submit`` itself, synchronously, instead of failing later on a
worker. Callables without an introspectable signature (some builtins and C extensions) are
not checked. Signatures are cached per function object, so a loop of submits pays for
``inspect.signature`` once.
"""

from typing import Any, Callable, Dict, Optional, Tuple

_CACHE: Dict[int, Tuple[Callable[..., Any], Optional[Any]]] = {}  # id(fn) -> (fn, its Signature or None)
_CACHE_LIMIT = 1024


def check_call(fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
    """Raise TypeError if ``fn(*args, **kwargs)`` cannot bind to ``fn``'s signature."""
    entry = _CACHE.get(id(fn))
    if entry is None or entry[0] is not fn:
        import inspect
        try:
            signature: Optional[Any] = inspect.signature(fn)
        except (TypeError, ValueError):  # no signature to check against
            signature = None
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        entry = _CACHE[id(fn)] = (fn, signature)
    signature = entry[1]
    if signature is None:
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
        raise TypeError("%s(): %s" % (name, exc)) from None
