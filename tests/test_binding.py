"""check_call (submit's TypeError for a call that cannot bind): its positional fast path
must agree with inspect.Signature.bind for every kind of signature."""

import inspect

import pytest

from scaler.client.binding import check_call


def f0():
    pass


def f1(a):
    pass


def f2(a, b=1):
    pass


def f3(a, b, *args):
    pass


def f4(a, *, k):
    pass


def f5(a, *, k=1):
    pass


def f6(*args, **kwargs):
    pass


def f7(a, b, **kwargs):
    pass


def f8(a, b=2, *args, k=3, **kwargs):
    pass


class Method:
    def m(self, x):
        pass


CALLABLES = [f0, f1, f2, f3, f4, f5, f6, f7, f8, Method().m, Method, lambda x, y=0: x]


@pytest.mark.parametrize("fn", CALLABLES, ids=lambda fn: getattr(fn, "__qualname__", repr(fn)))
def test_check_call_agrees_with_signature_bind(fn):
    signature = inspect.signature(fn)
    for count in range(5):
        for kwargs in ({}, {"k": 1}, {"b": 2}, {"a": 0}, {"unknown": 1}):
            args = tuple(range(count))
            try:
                signature.bind(*args, **kwargs)
                expected = True
            except TypeError:
                expected = False
            try:
                check_call(fn, args, kwargs)
                got = True
            except TypeError:
                got = False
            assert got == expected, (fn, args, kwargs)


def test_a_callable_without_a_signature_is_not_checked():
    check_call(max, (1, 2, 3), {})  # no introspectable signature on some builds: never raises here
