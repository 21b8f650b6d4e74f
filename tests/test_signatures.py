"""Beam's signature reading, cached: the same answers as Beam's own, and Beam uses it."""

from __future__ import annotations

import functools

import apache_beam as beam
import pytest
from apache_beam.transforms import core, userstate

from pipeline import signatures

pytestmark = pytest.mark.pipeline_env


class _Stateful(beam.DoFn):
    STATE = userstate.CombiningValueStateSpec("total", sum)

    def process(self, element, total=beam.DoFn.StateParam(STATE), *args, side=None, **kwargs):  # noqa: B008
        yield element


def _plain(a, b=2, *rest, c=3, **more):
    return a


class _Callable:
    def __call__(self, x, y=1):
        return x


@pytest.mark.parametrize(
    "function",
    [
        _plain,
        lambda x, y=5: x,
        functools.partial(_plain, 1),
        _Callable(),
        _Stateful().process,
        _Stateful.process,
        str.upper,
        len,
    ],
    ids=["function", "lambda", "partial", "callable", "bound", "unbound", "descriptor", "builtin"],
)
def test_the_same_arguments_and_defaults_as_beams(function):
    expected = signatures._BEAM_GET_FUNCTION_ARGS_DEFAULTS(function)
    assert signatures.get_function_args_defaults(function) == expected
    assert signatures.get_function_args_defaults(function) == expected  # from the cache


def test_a_bound_method_is_read_once_for_every_instance(monkeypatch):
    calls = []
    beams = signatures._BEAM_GET_FUNCTION_ARGS_DEFAULTS

    def counting(f):
        calls.append(f)
        return beams(f)

    monkeypatch.setattr(signatures, "_BEAM_GET_FUNCTION_ARGS_DEFAULTS", counting)
    monkeypatch.setattr(signatures, "_CACHE", {})
    for _ in range(3):
        args, _defaults = signatures.get_function_args_defaults(_Stateful().process)
        args.append("changed by a caller")  # a caller's list is its own
    assert len(calls) == 1
    assert signatures.get_function_args_defaults(_Stateful().process) == beams(_Stateful().process)


def test_an_unhashable_callable_is_read_each_time():
    class Unhashable(_Callable):
        __hash__ = None

    assert signatures.get_function_args_defaults(Unhashable()) == (["x", "y"], [1])


def test_beam_reads_signatures_through_the_replaced_function(monkeypatch):
    # Fails if Beam no longer looks the function up in apache_beam.transforms.core, the one
    # place the cache replaces.
    monkeypatch.setattr(core, "get_function_args_defaults", core.get_function_args_defaults)
    signatures.cache_signatures()
    assert core.get_function_args_defaults is signatures.get_function_args_defaults
    seen = []
    monkeypatch.setattr(
        signatures, "_CACHE", type("Recording", (dict,), {"get": lambda s, k: seen.append(k)})()
    )
    assert userstate.is_stateful_dofn(_Stateful())
    assert seen, "Beam's get_dofn_specs no longer reads signatures through core"
