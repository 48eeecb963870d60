import json

from instseg.cli.main import main


def test_demo_tiny_run_writes_every_artifact_and_predict_works(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(
        [
            "demo",
            "--out",
            str(out),
            "--iters",
            "4",
            "--num-train",
            "12",
            "--num-test",
            "4",
            "--no-progress",
            "data.batch_size=2",
            "checkpoint_period=2",
            "log_period=1",
        ]
    )
    assert rc == 0
    for name in (
        "model.pt", "metrics.json", "metrics.jsonl", "curves.png", "config.yaml", "report.html"
    ):  # fmt: skip
        assert (out / name).is_file(), name
    assert len(list((out / "vis").glob("*.jpg"))) == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"bbox", "segm"}
    assert 0.0 <= metrics["segm"]["AP"] <= 100.0
    printed = capsys.readouterr().out
    summary = json.loads(printed.split("next:")[0])
    assert printed.rstrip().endswith(f"report: {out / 'report.html'}")
    assert summary["segm_AP"] == metrics["segm"]["AP"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iter"] for x in lines if "total_loss" in x] == [1, 2, 3, 4]
    # resuming a finished run continues from the last checkpoint and changes nothing
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--iters",
                "4",
                "--num-train",
                "12",
                "--num-test",
                "4",
                "--no-progress",
                "--resume",
                "data.batch_size=2",
            ]
        )
        == 0
    )
    pred = tmp_path / "pred"
    src = next((out / "data").glob("test_*")) / "images"
    assert (
        main(
            [
                "predict",
                "--weights",
                str(out / "model.pt"),
                "--source",
                str(src),
                "--out",
                str(pred),
            ]
        )
        == 0
    )
    assert (pred / "results.json").is_file()
