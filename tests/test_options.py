"""One override mechanism: dotted keys through ``config.replace``, and the option tables that the
command lines and the notebooks name their settings by."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from localign.config import replace


@dataclass(frozen=True)
class _Inner:
    rate: float = 1.0
    sizes: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class _Outer:
    name: str = "a"
    inner: _Inner = field(default_factory=_Inner)
    pair: tuple[int, int] = (0, 0)


def test_replace_converts_values_as_a_yaml_file_would():
    out = replace(_Outer(), **{"inner.rate": 2, "inner.sizes": [3, 4], "pair": [1, 2]})
    assert out == _Outer(inner=_Inner(rate=2.0, sizes=(3, 4)), pair=(1, 2))
    assert isinstance(out.inner.rate, float) and isinstance(out.inner.sizes, tuple)
    assert replace(_Outer(), inner={"rate": 3}).inner == _Inner(rate=3.0)


def test_replace_names_bad_keys():
    with pytest.raises(ValueError, match=r"_Inner: unknown field 'ratee'"):
        replace(_Outer(), **{"inner.ratee": 1})
    with pytest.raises(ValueError, match=r"'name.x' is not a nested config field"):
        replace(_Outer(), **{"name.x": 1})


def test_eval_flags_and_config_come_from_one_table():
    from localign.eval.cli import add_arguments
    from localign.eval.options import EVAL_OPTIONS, make_eval_config
    from localign.eval.protocols.runner import EvalConfig

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert {a.dest for a in parser._actions} - {"help", "set"} == set(EVAL_OPTIONS)
    cfg = make_eval_config(tasks="probe", fractions=[0.5, 1], seeds="0,1", baselines="none", threads=1, device="cpu",
                           overrides={"unet.max_steps": 3})
    assert cfg == EvalConfig(tasks=("probe",), fractions=(0.5, 1.0), seeds=(0, 1), baselines=(), num_threads=1,
                             device="cpu").with_overrides(**{"unet.max_steps": 3})
    with pytest.raises(ValueError, match="evaluate_runs"):
        make_eval_config(runs=["r"])
