"""The report builder on small synthetic output folders (no browser)."""

import re
import shutil

import pytest

from instseg.evaluation.coco import evaluate_coco
from instseg.reporting import ReportError, build_report, collect_report
from instseg.utils.io import read_json


def _texts(table) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in table.rows}


def test_run_folder_gives_training_and_evaluation_with_breakdowns(run_dir, scenes):
    rep = collect_report(run_dir)
    assert [a for a, _ in rep.sections] == ["training", "evaluation", "predictions"]
    t = rep.training
    assert t.precision and t.precision.startswith("amp=none")
    assert t.command == f"instseg train {run_dir / 'config.yaml'}"
    assert t.curves.startswith("data:image/png;base64,")
    assert [p for p, _ in t.history.eval["segm/AP"]] == [2, 4]
    summary = _texts(t.summary)
    assert summary["iterations"] == ["4"] and summary["final total loss"] == ["0.375"]
    # metrics.json table: the "all / segm" row shows metrics.json's AP
    metrics = read_json(run_dir / "metrics.json")
    groups = rep.evaluation.tables[0]
    assert groups.rows[0][:4] == ["all", "segm", "all", f"{metrics['segm']['AP']:.2f}"]
    # per category: the dropped category scores 0, the others 100 (perfect masks)
    gt = read_json(scenes / "annotations.json")
    names = {c["id"]: c["name"] for c in gt["categories"]}
    dropped = names[gt["annotations"][0]["category_id"]]
    cats = _texts(rep.evaluation.tables[1])
    assert cats["all"][1] == f"{metrics['segm']['AP']:.2f}"  # same protocol as the run's eval
    assert cats[dropped][1] == "0.00"
    assert all(v[1] == "100.00" for k, v in cats.items() if k not in ("all", dropped))
    assert sum(int(v[0]) for k, v in cats.items() if k != "all") == int(cats["all"][0])
    occ = rep.evaluation.tables[2]
    assert occ.title.startswith("Per occlusion level")
    assert sum(int(r[1]) for r in occ.rows) == int(cats["all"][0])
    # predictions: the GT's images, every detection drawn (scores 0.9 >= 0.4)
    g = rep.predictions
    assert g.picture_kind == "images" and len(g.images) == 3
    assert sum(len(im.instances) for im in g.images) == len(read_json(run_dir / "results.json"))


def test_page_holds_precision_tables_and_toggles(run_dir):
    page = build_report(run_dir)
    assert page == run_dir / "report.html"
    html = page.read_text(encoding="utf-8")
    assert "precision: amp=none" in html
    assert "Per category (%)" in html and "Per occlusion level (%)" in html
    assert html.count('class="cat-toggle"') == len(collect_report(run_dir).predictions.categories)
    assert html.count("<path ") == html.count('class="inst-toggle"') > 0
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_predict_folder_uses_overlays_and_explain_panels(predict_dir):
    rep = collect_report(predict_dir)
    assert [a for a, _ in rep.sections] == ["predictions", "explain"]
    g = rep.predictions
    assert g.picture_kind == "overlays"
    assert [im.image_id for im in g.images] == [1, 2, 3]  # numeric stems
    assert g.categories and all(n.startswith("class ") for n in g.categories.values())
    assert [r for r, _ in rep.explanations[0].panels] == [0, 1]


def test_score_threshold_hides_detections(predict_dir):
    g = collect_report(predict_dir, score_thresh=0.95).predictions
    assert all(not im.instances and im.hidden > 0 for im in g.images)


def test_eval_folder_without_gt_says_how_to_get_the_breakdown(run_dir, tmp_path):
    ev = tmp_path / "eval"
    ev.mkdir()
    for name in ("metrics.json", "results.json"):
        shutil.copy(run_dir / name, ev / name)
    rep = collect_report(ev)
    assert [a for a, _ in rep.sections] == ["evaluation"]
    assert len(rep.evaluation.tables) == 1
    assert "--gt" in rep.evaluation.notes[0]
    gt = collect_report(run_dir).ground_truth.path
    rep = collect_report(ev, gt=gt)
    assert [t.title for t in rep.evaluation.tables][1] == "Per category (%)"
    assert rep.predictions is not None and rep.predictions.picture_kind == "images"


def test_breakdown_uses_the_same_scores_as_evaluate_coco(run_dir, scenes):
    rep = collect_report(run_dir)
    gt = rep.ground_truth.coco
    bbox = evaluate_coco(gt, read_json(run_dir / "results.json"), iou_type="bbox")
    assert _texts(rep.evaluation.tables[1])["all"][4] == f"{bbox['AP']:.2f}"


def test_track_folder(track_dir, tmp_path):
    out = tmp_path / "pages" / "track.html"
    page = build_report(track_dir, out=out)
    rep = collect_report(track_dir, page=out)
    v = rep.video
    assert v.title.startswith("Tracking")
    assert v.videos == [("vis.mp4", "../track/vis.mp4")]  # relative to the page
    assert [r[4:] for r in v.tracks.rows] == [["0", "7", "8"], ["3", "7", "5"]]
    assert len(v.masks) == 6 and v.timeline
    assert 'src="../track/vis.mp4"' in page.read_text(encoding="utf-8")


def test_inpaint_folder_shows_before_and_after(inpaint_dir):
    rep = collect_report(inpaint_dir)
    assert [a for a, _ in rep.sections] == ["inpaint"]
    ip = rep.inpaint
    assert ip.num_frames == 4 and ip.video == "video.mp4" and not ip.note
    assert len(ip.pairs) == 4
    assert all(b.src.startswith("data:image/") and a.src for b, a in ip.pairs)
    (inpaint_dir / "inpaint.json").unlink()
    ip = collect_report(inpaint_dir).inpaint
    assert "inpaint.json" in ip.note and all(not b.src for b, _ in ip.pairs)


def test_tensorboard_events_when_there_is_no_jsonl(run_dir):
    from torch.utils.tensorboard import SummaryWriter

    (run_dir / "metrics.jsonl").unlink()
    with SummaryWriter(str(run_dir / "tb")) as w:
        for it in (1, 2, 3):
            w.add_scalar("train/total_loss", 3.0 - it, it)
        w.add_scalar("eval/segm/AP", 12.5, 3)
    h = collect_report(run_dir).training.history
    assert h.train["total_loss"] == [(1, 2.0), (2, 1.0), (3, 0.0)]
    assert h.eval["segm/AP"] == [(3, 12.5)]


@pytest.mark.parametrize("kind", ["missing", "empty", "unknown"])
def test_unusable_folders_are_a_report_error_naming_them(tmp_path, kind):
    folder = tmp_path / kind
    if kind != "missing":
        folder.mkdir()
    if kind == "unknown":
        (folder / "notes.txt").write_text("hello")
        (folder / "metrics.json").write_text('{"loss": 1}')  # not an evaluation's metrics
    with pytest.raises(ReportError, match=re.escape(str(folder))):
        collect_report(folder)


def test_broken_config_names_the_file(run_dir):
    (run_dir / "config.yaml").write_text("a: [1\n")
    with pytest.raises(ValueError, match="config.yaml: not valid YAML"):
        collect_report(run_dir)
