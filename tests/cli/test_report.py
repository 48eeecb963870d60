import json

from instseg.cli.main import main


def test_report_writes_the_page_and_prints_its_path(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("# precision: amp=none -> fp32 on cpu\ntask: image\n")
    (run / "metrics.jsonl").write_text(json.dumps({"iter": 1, "total_loss": 2.5}) + "\n")
    (run / "metrics.json").write_text(json.dumps({"segm": {"AP": 12.5}, "bbox": {"AP": 10.0}}))
    out = tmp_path / "page.html"
    assert main(["report", str(run), "--out", str(out), "--no-breakdown"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out}"
    html = out.read_text(encoding="utf-8")
    assert "precision: amp=none -&gt; fp32 on cpu" in html
    assert "<td>12.50</td>" in html and "breakdown skipped" in html


def test_report_on_an_empty_folder_is_one_line_and_status_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"instseg report: {tmp_path / 'empty'}: the folder is empty"]
