import pytest

from instseg.cli.main import main


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_eager(tiny_weights, tmp_path, capsys, fmt):
    out = tmp_path / f"m.{fmt}"
    rc = main(
        [
            "export",
            "--weights",
            str(tiny_weights),
            "--format",
            fmt,
            "--size",
            "96",
            "128",
            "--detections",
            "7",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert out.is_file() and out.stat().st_size > 100_000
    err = float(text.rsplit("=", 1)[1])
    assert err < 1e-3  # the command itself checks a fresh input against eager PyTorch


def test_export_graph_reproduces_eager_on_new_inputs(tiny_weights, tmp_path):
    import torch

    from instseg.inference.export import eager_outputs, export_model
    from instseg.inference.loading import load_trained_model

    model, _ = load_trained_model(tiny_weights, fixed_num_detections=5)
    path = export_model(model, tmp_path / "m.ts", fmt="torchscript", image_size=(64, 96))
    traced = torch.jit.load(str(path))
    for seed in (3, 4):
        x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(seed)) * 255
        ref = eager_outputs(model, x)
        got = traced(x)
        assert [t.shape for t in got] == [(5, 4), (5,), (5,), (5, 28, 28)]
        for r, g in zip(ref, got, strict=True):
            assert torch.equal(r, g)
