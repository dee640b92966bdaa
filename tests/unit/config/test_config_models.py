"""The config dialect: {kind, params} everywhere, one cluster model, a description on every field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

import oserve.config as serve_cfg
import oserve.sim.config as sim_cfg
from oserve.compose import build_forecaster
from oserve.errors import ConfigError
from oserve.profiles.profiler import ProfileConfig, SweepConfig
from oserve.types import DEFAULT_SCHEME, ClusterSpec, NodeSpec

ROOT = Path(__file__).resolve().parents[3]
MODELS = [serve_cfg.ComponentConfig, serve_cfg.NodeGroupConfig, serve_cfg.ClusterConfig, serve_cfg.PlanConfig,
          serve_cfg.ModelConfig, serve_cfg.ServerConfig, serve_cfg.VariantConfig, serve_cfg.ClassesConfig,
          serve_cfg.OrchestratorConfig, serve_cfg.ParkingConfig, serve_cfg.HysteresisConfig, serve_cfg.ServeConfig, sim_cfg.SimConfig, sim_cfg.ControlConfig,
          sim_cfg.SwitchingConfig, sim_cfg.RoutingConfig, sim_cfg.PlainVllmConfig, sim_cfg.TraceConfig,
          sim_cfg.ContentionConfig]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_config_model_and_field_is_documented(model: type[BaseModel]) -> None:
    _check_documented(model)
    doc = (ROOT / "docs" / "configuration.md").read_text()
    absent = [name for name in model.model_fields if f"`{name}`" not in doc]
    assert not absent, f"docs/configuration.md does not list {model.__name__} fields {absent}"


@pytest.mark.parametrize("model", [ProfileConfig, SweepConfig], ids=lambda m: m.__name__)
def test_profile_config_models_are_documented(model: type[BaseModel]) -> None:
    _check_documented(model)


def _check_documented(model: type[BaseModel]) -> None:
    assert model.__doc__ and model.__doc__.strip(), f"{model.__name__} has no docstring"
    missing = [name for name, f in model.model_fields.items() if not f.description]
    assert not missing, f"{model.__name__} fields without a description: {missing}"


def test_serve_and_sim_examples_name_the_same_components_and_cluster_model() -> None:
    serve = serve_cfg.load_config(ROOT / "examples" / "cpu-smollm2.yaml")
    sim = sim_cfg.load_config(ROOT / "examples" / "sim-cpu-smollm2.yaml")
    assert serve.orchestrator is not None
    assert sim.forecaster == serve.orchestrator.forecaster and sim.forecaster.kind == "default"
    assert sim.planner == serve.orchestrator.planner
    assert sim.classes.to_scheme() == serve.classes.to_scheme()
    assert [n.devices for n in sim.cluster.spec().nodes] == [n.devices for n in serve.cluster_spec.nodes]
    assert type(build_forecaster(sim.forecaster)).__name__ == "DefaultForecaster"


def test_the_demo_and_its_simulator_twin_share_components_and_control_settings() -> None:
    serve = serve_cfg.load_config(ROOT / "examples" / "demo-cpu-precision.yaml")
    sim = sim_cfg.load_config(ROOT / "examples" / "sim-cpu-demo.yaml")
    oc = serve.orchestrator
    assert oc is not None and sim.slo == oc.slo
    assert sim.forecaster == oc.forecaster and sim.planner == oc.planner
    assert sim.classes.to_scheme() == serve.classes.to_scheme() and sim.variants == list(serve.variants)
    assert (sim.control.interval_s, sim.control.horizon_s) == (oc.control_interval_s, oc.horizon_s)
    assert sim.control.surge == oc.surge and sim.control.parking == oc.parking
    assert sim.control.migrate_on_drain == oc.migrate_on_drain
    assert sim.recompute_capacities == oc.recompute_capacities
    assert sim.control.hysteresis.scale_down_window_s == oc.hysteresis.scale_down_window_s
    assert [(p.variant, p.device_ids) for p in sim.deployment or []] == [(p.variant, p.device_ids)
                                                                         for p in serve.deployment]
    assert Path(sim.resolve(sim.table)).name == Path(oc.table).name


def test_old_dialects_are_refused_with_the_field_named(tmp_path: Path) -> None:
    p = tmp_path / "sim.yaml"
    p.write_text("table: t.json\nforecaster: {name: ewma}\n")
    with pytest.raises(ConfigError) as info:
        sim_cfg.load_config(p)
    assert info.value.field is not None and info.value.field.startswith("forecaster")
    p.write_text("table: t.json\ncluster: {nodes: 4, devices_per_node: 8}\n")
    with pytest.raises(ConfigError) as info:
        sim_cfg.load_config(p)
    # the old flat keys are named (an unknown key is reported first, with the allowed ones)
    assert info.value.field is not None and info.value.field.startswith("cluster.")
    assert "nodes" in str(info.value)


def test_cluster_groups_expand_and_accept_a_cluster_spec() -> None:
    cfg = serve_cfg.ClusterConfig.model_validate(
        {"nodes": [{"name": "n", "count": 2, "device_type": "cpu", "devices": 2, "device_memory_gib": 1}]})
    spec = cfg.spec()
    assert [n.name for n in spec.nodes] == ["n0", "n1"] and spec.nodes[0].device_memory_bytes == 1 << 30
    assert serve_cfg.ClusterConfig.model_validate(spec).spec() == spec
    one = ClusterSpec(nodes=[NodeSpec(name="a", device_type="cpu", devices=1, device_memory_bytes=5)])
    assert serve_cfg.ClusterConfig.model_validate(one).spec() == one
    with pytest.raises(ValueError, match="node names repeat"):
        serve_cfg.ClusterConfig.model_validate({"nodes": [
            {"name": "a", "device_type": "cpu", "devices": 1, "device_memory_gib": 1},
            {"name": "a", "device_type": "cpu", "devices": 1, "device_memory_gib": 1}]})


def test_default_classes_are_the_default_scheme() -> None:
    assert serve_cfg.ClassesConfig().to_scheme() is DEFAULT_SCHEME


def test_classes_config_carries_min_quality_to_the_scheme_and_the_planner_demand() -> None:
    from oserve.config import ClassesConfig

    cfg = ClassesConfig(min_quality={"long-in/short-out": 0.95})
    scheme = cfg.to_scheme()
    assert scheme.min_quality_by_class == {"long-in/short-out": 0.95}
    with pytest.raises(ConfigError) as info:
        ClassesConfig(min_quality={"nope": 0.5}).to_scheme()
    assert info.value.field is not None and "min_quality" in info.value.field


@pytest.mark.parametrize("value", [".inf", "1e400", ".nan", "-1", "abc"])
def test_a_migration_grace_that_is_not_a_finite_number_of_seconds_is_refused_naming_the_field(
        tmp_path: Path, value: str) -> None:
    # an infinite grace would let a migrating drain wait forever (drain_timeout_s does not apply with it)
    serve = (ROOT / "examples" / "demo-cpu-precision.yaml").read_text()
    sim = (ROOT / "examples" / "sim-cpu-demo.yaml").read_text()
    assert "  migrate_on_drain: true\n" in serve and "  migrate_on_drain: true\n" in sim
    grace = f"  migrate_on_drain: true\n  migration_grace_s: {value}\n"
    for text, loader, field in ((serve, serve_cfg.load_config, "orchestrator.migration_grace_s"),
                                (sim, sim_cfg.load_config, "control.migration_grace_s")):
        p = tmp_path / "c.yaml"
        text = re.sub(r"(?m)^  migration_grace_s: .*\n", "", text)  # the example's own grace, if any
        p.write_text(text.replace("  migrate_on_drain: true\n", grace))
        with pytest.raises(ConfigError) as info:
            loader(p)
        assert info.value.field == field, str(info.value)


def test_a_migration_grace_without_migrating_drains_and_an_infinite_drain_timeout_are_refused(tmp_path: Path) -> None:
    serve = (ROOT / "examples" / "demo-cpu-precision.yaml").read_text()
    sim = (ROOT / "examples" / "sim-cpu-demo.yaml").read_text()
    for text, loader in ((serve, serve_cfg.load_config), (sim, sim_cfg.load_config)):
        text = re.sub(r"(?m)^  migration_grace_s: .*\n", "", text)  # the example's own grace, if any
        p = tmp_path / "c.yaml"
        p.write_text(text.replace("  migrate_on_drain: true\n", "  migrate_on_drain: false\n  migration_grace_s: 2\n"))
        with pytest.raises(ConfigError) as info:
            loader(p)
        assert "migration_grace_s" in str(info.value) and "migrate_on_drain" in str(info.value)
        p.write_text(text.replace("  migrate_on_drain: true\n", "  migrate_on_drain: false\n"))
        assert loader(p) is not None  # no grace: fine either way
    p = tmp_path / "c.yaml"
    p.write_text(serve.replace("  drain_timeout_s: 20\n", "  drain_timeout_s: .inf\n"))
    with pytest.raises(ConfigError) as info:
        serve_cfg.load_config(p)
    assert info.value.field == "orchestrator.drain_timeout_s"
    p.write_text(sim.replace("drain_timeout_s: 20,", "drain_timeout_s: .inf,"))
    with pytest.raises(ConfigError) as info:
        sim_cfg.load_config(p)
    assert info.value.field == "switching.drain_timeout_s"
