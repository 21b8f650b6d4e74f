"""Beam's reading of function signatures, each function read once.

While the job is built, translated and run, Beam asks every DoFn for the arguments of each of
its methods (`apache_beam.transforms.core.get_function_args_defaults`, by way of
`userstate.get_dofn_specs`) each time it applies a transform, checks whether a DoFn is
stateful, translates a step and sets a stage up: tens of thousands of `inspect.signature`
calls for a few hundred functions. A function's parameters do not change, so the answer for
one function is the answer every time it is asked. `cache_signatures()` keeps it.

Beam has no public hook for this; this module is the one place that replaces its function
(tests/test_signatures.py fails if Beam's changes). Where it is not installed (Dataflow's
workers), Beam reads the signatures as before.
"""

from __future__ import annotations

import types

from apache_beam.transforms import core

_BEAM_GET_FUNCTION_ARGS_DEFAULTS = core.get_function_args_defaults


def _key(f):
    # A bound method is made anew at each attribute access; its signature is its function's
    # without the first parameter, the same for every instance.
    if isinstance(f, types.MethodType):
        return (f.__func__, True)
    return (f, False)


_CACHE: dict = {}


def get_function_args_defaults(f):
    """Beam's `get_function_args_defaults(f)`, computed once for each function."""
    try:
        key = _key(f)
        hash(key)
    except TypeError:  # an unhashable callable object: read it each time
        return _BEAM_GET_FUNCTION_ARGS_DEFAULTS(f)
    args, defaults = _cached_by_key(key, f)
    return list(args), list(defaults)


def _cached_by_key(key, f) -> tuple[tuple[str, ...], tuple]:
    # The key holds the function, so its id is not reused while the answer is kept.
    found = _CACHE.get(key)
    if found is None:
        args, defaults = _BEAM_GET_FUNCTION_ARGS_DEFAULTS(f)
        found = _CACHE[key] = (tuple(args), tuple(defaults))
    return found


def cache_signatures() -> None:
    """Makes Beam read each function's signature once in this process."""
    core.get_function_args_defaults = get_function_args_defaults
