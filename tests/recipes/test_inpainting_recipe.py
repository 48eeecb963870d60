"""The VOIN recipe's config: ``configs/voin_davis.yaml`` trains every stage exactly as the model
card's script commands did (same inputs per stage, same packed meta), ``tiny`` shrinks a copy,
bad values are clean errors. (Tiny end-to-end runs and resume: tests/cli/test_train.py.)"""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest

from instseg.config import ConfigError, load_config
from instseg.recipes.inpainting import canvas_size, effective_config
from instseg.recipes.inpainting_config import STAGES, InpaintingTrainConfig

ROOT = Path(__file__).resolve().parents[2]
CARD = ROOT / "src" / "instseg" / "weights" / "voin_default.md"


def _script():
    spec = importlib.util.spec_from_file_location("train_voin", ROOT / "scripts" / "train_voin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _card_commands() -> list[list[str]]:
    """The card's ``P="..."`` prefix expanded into each ``$P ...`` line (script arguments)."""
    lines = CARD.read_text().splitlines()
    prefix = next(ln for ln in lines if ln.startswith("P="))
    base = shlex.split(prefix[2:])[0].split()[2:]  # drop the interpreter and the script path
    return [base + shlex.split(ln[3:]) for ln in lines if ln.startswith("$P ")]


def _stage_inputs(cfg: InpaintingTrainConfig, stage: str, seed: int, out: str) -> dict:
    cfg = effective_config(cfg)
    d, sc = cfg.data, getattr(cfg, stage)
    return {
        "variant": cfg.variant, "lr": cfg.lr, "amp": cfg.amp, "device": cfg.device,
        "sequences": d.sequences, "frames": d.frames_per_seq, "clip_len": d.clip_len,
        "batch": d.batch, "size": sc.size or d.size, "iters": sc.iters, "seed": seed, "out": out,
    }  # fmt: skip


def _pack_inputs(cfg: InpaintingTrainConfig) -> dict:
    cfg = effective_config(cfg)
    d = cfg.data
    return {
        "variant": cfg.variant, "canvas": canvas_size(cfg), "seed": cfg.seed, "size": d.size,
        "clip_len": d.clip_len, "batch": d.batch, "sequences": d.sequences,
        "name": cfg.weights_name, "fp32": cfg.full_precision,
    }  # fmt: skip


def test_config_reproduces_the_model_card_commands():
    script = _script()
    commands = _card_commands()
    assert [c[c.index("--stage") + 1] for c in commands] == [*STAGES, "pack"]
    yaml_cfg = load_config(InpaintingTrainConfig, ROOT / "configs" / "voin_davis.yaml")
    assert yaml_cfg.stage == "all"
    for argv in commands[:3]:
        args = script._parser().parse_args(argv)
        stage = args.stage
        from_script = _stage_inputs(script.config_from_args(args), stage, args.seed, str(args.out))
        out = str(Path(yaml_cfg.out_dir) / stage)
        seed = yaml_cfg.seed + STAGES.index(stage)
        assert _stage_inputs(yaml_cfg, stage, seed, out) == from_script, stage
    args = script._parser().parse_args(commands[3])
    assert str(args.from_dir) == yaml_cfg.out_dir
    assert _pack_inputs(yaml_cfg) == _pack_inputs(script.config_from_args(args))


def test_tiny_shrinks_a_copy_and_bad_values_are_config_errors():
    cfg = load_config(InpaintingTrainConfig, ROOT / "configs" / "voin_davis.yaml", ["tiny=true"])
    tiny = effective_config(cfg)
    assert tiny.variant == "small" and tiny.data.size == 48 and tiny.generator.size == 0
    assert (tiny.data.frames_per_seq, tiny.data.clip_len) == (8, 3)
    assert tiny.data.sequences == cfg.data.sequences[:2]
    assert cfg.generator.size == 64 and cfg.data.size == 128  # the input is not modified
    with pytest.raises(ConfigError, match="stage must be one of shape, flow, generator, all"):
        effective_config(InpaintingTrainConfig(stage="shapes"))
    with pytest.raises(ConfigError, match="variant must be one of"):
        effective_config(InpaintingTrainConfig(variant="huge"))


def test_pack_records_each_stage_size(tmp_path):
    """Each stage's frame height reaches the packed file (the generator's, 64 in the card's
    config, is what inference feeds it at), from the stage's record when there is one."""
    from instseg.engine.checkpoint import Checkpointer
    from instseg.inference.inpainter import Inpainter, load_voin_weights
    from instseg.recipes.inpainting import pack_voin, voin_nets, write_stage_record

    cfg = load_config(InpaintingTrainConfig, ROOT / "configs" / "voin_davis.yaml")
    nets = voin_nets(cfg)
    for stage, net in zip(STAGES, (nets.shape_net, nets.flow_net, nets.generator), strict=True):
        Checkpointer(net, save_dir=tmp_path / stage).save("model_final", iteration=1)
    write_stage_record(tmp_path / "generator", "generator", 40)  # as trained, not as configured
    cfg.generator.size = 64
    path = pack_voin(cfg, tmp_path)
    _, meta = load_voin_weights(path)
    assert meta.model["stage_sizes"] == {"shape": 128, "flow": 128, "generator": 40}
    assert "train_size" not in meta.training  # the old, single (misleading) size
    assert Inpainter.from_weights(path, progress=False).generator_max_side == 40
    (tmp_path / "generator" / "stage.json").write_text('{"stage": "flow", "size": 64}')
    with pytest.raises(ValueError, match="records stage 'flow'"):
        pack_voin(cfg, tmp_path)
