"""Capacities recomputed at a serving config's class lengths and SLO (oserve.profiles.rescore)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from oserve.config import ClassesConfig, load_config
from oserve.errors import TraceError
from oserve.profiles.capacity import build_table
from oserve.profiles.rescore import rescore_table
from oserve.profiles.roofline import roofline_model
from oserve.profiles.table import ProfileTable
from oserve.profiles.variants import Variant
from oserve.types import DEFAULT_SCHEME, SLO
from oserve.workload.stats import bucket_mean_lengths
from oserve.workload.trace import Trace

ROOT = Path(__file__).resolve().parents[3]
V8 = Variant(model="llama-3-8b", precision="fp16", tp=1, device_type="a100-80gb", max_model_len=8192)
V8_INT8 = Variant(model="llama-3-8b", precision="int8", tp=1, device_type="a100-80gb", max_model_len=8192)


def _table(scheme: ClassesConfig, slo: SLO) -> ProfileTable:
    vs = [V8, V8_INT8]
    return build_table(vs, {v.name: roofline_model(v) for v in vs}, source="modelled", slo=slo,
                       scheme=scheme.to_scheme(), start_times_s={v.name: 30.0 for v in vs}, created="2026-12-01")


def test_rescoring_at_the_profiling_lengths_and_slo_reproduces_the_shipped_demo_table() -> None:
    profiled = yaml.safe_load((ROOT / "examples" / "profile-cpu-demo.yaml").read_text())
    table = ProfileTable.load(ROOT / "examples" / "profiles" / "cpu-smollm2-precision.json")
    again = rescore_table(table, ClassesConfig(**profiled["classes"]).to_scheme(), table.slo)
    assert again == table


def test_rescoring_equals_building_the_table_at_the_new_lengths_and_slo() -> None:
    old = ClassesConfig(input_edges=[1024], output_edges=[128], expected_input_tokens=[512, 2048],
                        expected_output_tokens=[64, 256])
    new = old.model_copy(update={"expected_input_tokens": [300, 1500], "expected_output_tokens": [40, 400]})
    slo_new = SLO(ttft_s=0.5, tpot_s=0.05)
    rescored = rescore_table(_table(old, SLO()), new.to_scheme(), slo_new)
    assert rescored == _table(new, slo_new)
    assert rescored != _table(old, SLO())


def test_shorter_prompts_raise_the_long_prompt_capacity_and_names_follow_the_scheme() -> None:
    table = ProfileTable.load(ROOT / "examples" / "profiles" / "cpu-smollm2-precision.json")
    cfg = load_config(ROOT / "examples" / "demo-cpu-precision.yaml")
    rescored = rescore_table(table, cfg.classes.to_scheme(), table.slo)
    fp32 = "smollm2-135m-fp32-1c-s32"
    # the demo's long prompts average 208 tokens, the profile's 256: less prefill per request
    assert rescored.capacity(fp32, "long-in/short-out") > table.capacity(fp32, "long-in/short-out")
    # its long outputs average 70 tokens, the profile's 48: more decode per request
    assert rescored.capacity(fp32, "short-in/long-out") < table.capacity(fp32, "short-in/long-out")
    # memory, start times, iteration models and quality are the measured ones
    for name, row in rescored.variants.items():
        assert row.model_dump(exclude={"classes"}) == table.variants[name].model_dump(exclude={"classes"})
    other = ClassesConfig(input_edges=[64, 512], output_edges=[32]).to_scheme()
    assert rescore_table(table, other, table.slo).class_names == list(other.names)


def test_a_tighter_slo_never_raises_a_capacity() -> None:
    table = ProfileTable.load(ROOT / "examples" / "profiles" / "cpu-smollm2-precision.json")
    scheme = load_config(ROOT / "examples" / "demo-cpu-precision.yaml").classes.to_scheme()
    loose, tight = (rescore_table(table, scheme, s) for s in (SLO(ttft_s=2.0, tpot_s=0.2), SLO(ttft_s=1.0, tpot_s=0.1)))
    pairs = [(tight.capacity(v, c), loose.capacity(v, c)) for v in table.variants for c in scheme.names]
    assert all(t <= lo for t, lo in pairs) and any(t < lo for t, lo in pairs)
    assert tight.slo == SLO(ttft_s=1.0, tpot_s=0.1)


def test_bucket_mean_lengths() -> None:
    scheme = ClassesConfig(input_edges=[100], output_edges=[10], expected_input_tokens=[50, 400],
                           expected_output_tokens=[5, 99]).to_scheme()
    tr = Trace(arrival_s=np.arange(4.0), input_tokens=np.array([10, 30, 200, 301]),
               output_tokens=np.array([2, 4, 7, 9]))
    # every output is in the short bucket: the long one keeps the scheme's expected length
    assert bucket_mean_lengths(tr, scheme) == ([20, 250], [6, 99])
    with pytest.raises(TraceError):
        bucket_mean_lengths(Trace(arrival_s=np.array([]), input_tokens=np.array([], dtype=np.int64),
                                  output_tokens=np.array([], dtype=np.int64)), DEFAULT_SCHEME)


def test_the_demo_config_uses_its_slices_mean_lengths() -> None:
    from oserve.cli.demo import build_demo_trace

    cfg = load_config(ROOT / "examples" / "demo-cpu-precision.yaml")
    assert cfg.orchestrator is not None and cfg.orchestrator.recompute_capacities
    inputs, outputs = bucket_mean_lengths(build_demo_trace(rate_factor=1.0), cfg.classes.to_scheme())
    assert (inputs, outputs) == (cfg.classes.expected_input_tokens, cfg.classes.expected_output_tokens)


def test_the_simulator_plans_with_the_recomputed_capacities_when_asked() -> None:
    from oserve.compose.simulation import load_table
    from oserve.sim import config as sim_cfg

    cfg = sim_cfg.load_config(ROOT / "examples" / "sim-cpu-demo.yaml")
    assert cfg.recompute_capacities
    stored = load_table(cfg.model_copy(update={"recompute_capacities": False}))
    assert load_table(cfg) == rescore_table(stored, cfg.classes.to_scheme(), cfg.slo or stored.slo) != stored


def test_the_simulator_names_classes_the_stored_table_lacks_and_recomputes_any_scheme() -> None:
    from oserve.compose.simulation import load_table
    from oserve.errors import ProfileError
    from oserve.sim import config as sim_cfg

    cfg = sim_cfg.load_config(ROOT / "examples" / "sim-cpu-demo.yaml")
    three = cfg.model_copy(update={"classes": cfg.classes.model_copy(
        update={"output_edges": [24, 48], "expected_output_tokens": [14, 36, 70]})})
    assert load_table(three).class_names == list(three.classes.to_scheme().names)  # recomputed: any classes
    with pytest.raises(ProfileError, match=r"no class\(es\) \['short-in/out0'"):
        load_table(three.model_copy(update={"recompute_capacities": False}))


@pytest.mark.parametrize(("axis", "inputs", "outputs"), [("input", [-5, 208], [14, 70]), ("input", [0, 208], [14, 70]),
                                                          ("output", [48, 208], [-3, 70]), ("output", [48, 208], [14, 0])])
def test_expected_lengths_below_one_token_are_a_config_error_naming_the_field(axis, inputs, outputs) -> None:
    # before: -5 prompt tokens rated fp32 at 16.2 short-prompt req/s (5.1 at 48 tokens), and -3 output
    # tokens failed deep inside rescore_table with an untyped pydantic error
    from oserve.errors import ConfigError

    with pytest.raises(ConfigError, match=f"expected_{axis}_tokens") as info:
        ClassesConfig(input_edges=[128], output_edges=[24], expected_input_tokens=inputs,
                      expected_output_tokens=outputs).to_scheme()
    assert info.value.field == f"classes.expected_{axis}_tokens" and ">= 1" in str(info.value.allowed)


def test_unservable_classes_lists_classes_no_variant_serves_after_rescoring() -> None:
    from oserve.profiles.rescore import unservable_classes

    table = ProfileTable.load(ROOT / "examples" / "profiles" / "cpu-smollm2-precision.json")
    assert unservable_classes(table) == []
    # long prompts of 5,000 tokens: beyond max_model_len (2,048) and, clipped to 2,048 - O, past a 2-s TTFT
    beyond = ClassesConfig(input_edges=[128], output_edges=[24], expected_input_tokens=[48, 5000],
                           expected_output_tokens=[14, 70]).to_scheme()
    assert unservable_classes(rescore_table(table, beyond, table.slo)) == ["long-in/short-out", "long-in/long-out"]
    impossible = rescore_table(table, beyond, SLO(ttft_s=0.001, tpot_s=0.0001))
    assert unservable_classes(impossible) == impossible.class_names
