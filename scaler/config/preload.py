"""``--preload SPEC``: its grammar, and the check a command makes once, when it starts.

``pkg.mod:fn(1, 'a', debug=False)`` runs ``fn`` with literal arguments in every processor
before it takes tasks; ``pkg.mod`` only imports it. The processor runs it
(``worker/processor.py``); the commands that start workers call ``check_preload`` first,
so a typo is one line at start-up instead of one traceback per worker.
"""

import ast
import importlib.machinery
import importlib.util
import os
import sys
from typing import Optional, Tuple


class PreloadError(ValueError):
    pass


def parse_preload(spec: str) -> Tuple[str, Optional[str], tuple, dict]:
    """``pkg.mod:fn(1, 'a', debug=False)`` → (module, function, args, kwargs); literals only."""
    spec = spec.strip()
    if spec.endswith(".py") or os.sep in spec:
        raise PreloadError("preload %r looks like a file path; use a module path such as "
                           "'mypackage.init:setup'" % spec)
    module, _, call = spec.partition(":")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise PreloadError("preload %r: %r is not a module path" % (spec, module))
    if not call:
        return module, None, (), {}
    try:
        node = ast.parse(call, mode="eval").body
    except SyntaxError as exc:
        raise PreloadError("preload %r: cannot parse %r: %s" % (spec, call, exc.msg)) from None
    if isinstance(node, ast.Name):
        return module, node.id, (), {}
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise PreloadError("preload %r: expected module:function or module:function(literals)" % spec)
    try:
        args = tuple(ast.literal_eval(arg) for arg in node.args)
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    except ValueError:
        raise PreloadError("preload %r: arguments must be literals (numbers, strings, lists, dicts...)"
                           % spec) from None
    if len(kwargs) != len(node.keywords):
        raise PreloadError("preload %r: **kwargs is not supported" % spec)
    return module, node.func.id, args, kwargs


def check_preload(spec: str) -> None:
    """Parse ``spec`` and find its module on this interpreter's path without running any of
    its code (no package ``__init__`` either). ``PreloadError`` in one line if it is not there."""
    module, _, _, _ = parse_preload(spec)
    if module in sys.modules:
        return  # already imported here: it exists
    parts = module.split(".")
    path = None
    for depth in range(len(parts)):
        name = ".".join(parts[:depth + 1])
        loaded = sys.modules.get(name)
        if loaded is not None:  # imported here already (json, a test's package): look inside it
            found = getattr(loaded, "__spec__", None)
            path = getattr(loaded, "__path__", None)
            if path is None and depth < len(parts) - 1:
                raise PreloadError("preload %r: %r is a module, not a package, so it has no %r"
                                   % (spec.strip(), name, parts[depth + 1]))
            continue
        try:
            found = importlib.machinery.PathFinder.find_spec(name, path) if depth else _find_top(name)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise PreloadError("preload %r: no module named %r on this Python's path (sys.path / PYTHONPATH)"
                               % (spec.strip(), name))
        path = found.submodule_search_locations
        if path is None and depth < len(parts) - 1:
            raise PreloadError("preload %r: %r is a module, not a package, so it has no %r"
                               % (spec.strip(), name, parts[depth + 1]))


def _find_top(name: str) -> Optional[importlib.machinery.ModuleSpec]:
    if name in sys.builtin_module_names:
        return importlib.machinery.ModuleSpec(name, None)
    return importlib.util.find_spec(name)  # a top-level name: nothing is executed to find it
