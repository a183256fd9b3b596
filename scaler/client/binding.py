"""Binding a call to its function's signature at ``submit``, as upstream does.

A call that cannot bind (a missing argument, an unknown keyword, too many arguments)
raises ``TypeError`` from ``submit`` itself, synchronously, instead of failing later on a
worker. Callables without an introspectable signature (some builtins and C extensions) are
not checked. Signatures are cached per function object, so a loop of submits pays for
``inspect.signature`` once; and a call with only positional arguments, as many as the
function's plain parameters allow, is known to bind without ``Signature.bind`` (~3 µs).
"""

from typing import Any, Callable, Dict, Optional, Tuple

# id(fn) -> (fn, its Signature or None, (least, most) positional arguments that surely bind, or None)
_CACHE: Dict[int, Tuple[Callable[..., Any], Optional[Any], Optional[Tuple[int, int]]]] = {}
_CACHE_LIMIT = 1024


def check_call(fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
    """Raise TypeError if ``fn(*args, **kwargs)`` cannot bind to ``fn``'s signature."""
    entry = _CACHE.get(id(fn))
    if entry is None or entry[0] is not fn:
        entry = _remember(fn)
    signature, positional = entry[1], entry[2]
    if signature is None:
        return
    if positional is not None and not kwargs and positional[0] <= len(args) <= positional[1]:
        return  # the common case: plain positional parameters, filled in order
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
        raise TypeError("%s(): %s" % (name, exc)) from None


def _remember(fn: Callable[..., Any]) -> Tuple[Callable[..., Any], Optional[Any], Optional[Tuple[int, int]]]:
    import inspect
    try:
        signature: Optional[Any] = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to check against
        signature = None
    positional = None
    if signature is not None:
        kinds = [parameter.kind for parameter in signature.parameters.values()]
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        required_keyword_only = any(parameter.kind is inspect.Parameter.KEYWORD_ONLY
                                    and parameter.default is inspect.Parameter.empty
                                    for parameter in signature.parameters.values())
        if not required_keyword_only:
            count = sum(1 for kind in kinds if kind in plain)
            least = sum(1 for parameter in signature.parameters.values()
                        if parameter.kind in plain and parameter.default is inspect.Parameter.empty)
            most = 1 << 30 if inspect.Parameter.VAR_POSITIONAL in kinds else count
            positional = (least, most)
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    entry = _CACHE[id(fn)] = (fn, signature, positional)
    return entry
