from dataclasses import dataclass, field

import pytest

from instseg.config import ConfigError, apply_overrides, dump_config, load_config, to_dict


@dataclass
class Inner:
    lr: float = 0.1
    steps: list[int] = field(default_factory=lambda: [1, 2])
    name: str = "adamw"
    clip: float | None = None


@dataclass
class Outer:
    solver: Inner = field(default_factory=Inner)
    iters: int = 10
    flag: bool = False


def test_defaults_yaml_and_overrides(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("solver:\n  lr: 1\n  steps: [5]\niters: 3\n")
    cfg = load_config(Outer, f, ["solver.name=sgd", "flag=true", "solver.clip=2.5"])
    assert cfg.solver.lr == 1.0 and isinstance(cfg.solver.lr, float)
    assert cfg.solver.steps == [5] and cfg.iters == 3
    assert cfg.solver.name == "sgd" and cfg.flag is True and cfg.solver.clip == 2.5


def test_base_file_merges_one_level(tmp_path):
    (tmp_path / "base.yaml").write_text("iters: 7\nsolver:\n  lr: 0.5\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nsolver:\n  name: sgd\n")
    cfg = load_config(Outer, tmp_path / "child.yaml")
    assert (cfg.iters, cfg.solver.lr, cfg.solver.name) == (7, 0.5, "sgd")
    (tmp_path / "grandchild.yaml").write_text("_base_: child.yaml\n")
    with pytest.raises(ConfigError, match="one level"):
        load_config(Outer, tmp_path / "grandchild.yaml")


@pytest.mark.parametrize(
    "override, message",
    [
        ("solver.lrr=1", "unknown key 'solver.lrr'"),
        ("nope=1", "unknown key 'nope'"),
        ("iters=abc", "iters must be int"),
        ("flag=3", "flag must be true/false"),
        ("solver.steps=4", "solver.steps must be a list"),
        ("iters", "expected key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        apply_overrides(Outer(), [override])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("solver:\n  momentum: 0.9\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*solver\.momentum"):
        load_config(Outer, f)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    f = tmp_path / "x.yaml"
    f.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Outer, f)


def test_dump_roundtrip(tmp_path):
    cfg = apply_overrides(Outer(), ["solver.lr=0.25", "iters=4"])
    dump_config(cfg, tmp_path / "c.yaml")
    assert to_dict(load_config(Outer, tmp_path / "c.yaml")) == to_dict(cfg)
