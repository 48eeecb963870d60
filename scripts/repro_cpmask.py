"""Reproduce CPMask's partially supervised results (survey Table 4.1) and, optionally, the
few-shot setting (Table 4.2) on the synthetic scenes.

Partially supervised (``data.class_split``, default ``base->novel``: the synthetic categories
tagged "base" keep masks, "novel" ones are trained with boxes only); every variant is the same
detector with a class-agnostic mask head, same budget and seeds:

- ``baseline``: the class-agnostic Mask R-CNN head (``<detector>_maskrcnn``);
- ``boundary`` / ``affinity``: + Boundary-Parsing Module / + Non-local Affinity-Parsing unit;
- ``cpmask``: both;
- ``oracle``: CPMask trained with masks for every class (fully supervised upper bound),
  evaluated on the same split.

The table gives mask AP / AP50 / AP75 / APs / APm / APl on the novel classes (the columns of
Table 4.1) and AP on the base classes, as markdown; everything is written to
``OUT/results.json``. With ``--split voc->non_voc`` (or ``non_voc->voc``) and
``--set data.train_json=... --set data.train_root=...`` (and test_json/test_root) the same
script runs on COCO.

Few-shot (``--few-shot 10 20``, Table 4.2, synthetic only): per seed, CPMask is trained on the
base classes only (``fewshot_base``: the training file with the novel annotations removed),
then fine-tuned for ``--ft-iters`` iterations from those weights (``model.weights=``) on a
K-shot subset written by :func:`instseg.data.few_shot.sample_k_shot` (the same draw as
``instseg data few-shot --split base->novel --k K --seed S``): ``fewshot_k<K>``; and trained
from ImageNet weights on the novel K shots alone: ``fewshot_k<K>_nobase`` ("no base").

Example (tiny check)::

    python scripts/repro_cpmask.py --out runs/repro_cpmask_tiny --iters 20 --num-train 40 \\
        --num-test 20 --seeds 0 --few-shot 2 --ft-iters 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from repro_common import (  # noqa: E402
    add_common_args,
    base_overrides,
    cell,
    get,
    markdown_table,
    mean,
    run_all,
)

VARIANTS = ("baseline", "boundary", "affinity", "cpmask", "oracle")
LABELS = {
    "baseline": "baseline (class-agnostic Mask R-CNN head)",
    "boundary": "+ boundary parsing",
    "affinity": "+ affinity parsing",
    "cpmask": "CPMask (boundary + affinity)",
    "oracle": "oracle CPMask (fully supervised)",
}
HEAD = {
    "baseline": "maskrcnn",
    "boundary": "cpmask_boundary",
    "affinity": "cpmask_affinity",
    "cpmask": "cpmask",
    "oracle": "cpmask",
}
NOVEL_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p, variants=VARIANTS)
    p.add_argument("--split", default="base->novel", help="class split direction")
    p.add_argument(
        "--few-shot",
        type=int,
        nargs="*",
        default=[],
        metavar="K",
        help="also run the few-shot setting with these shot counts (e.g. 10 20)",
    )
    p.add_argument("--ft-iters", type=int, default=None,
                   help="few-shot fine-tuning iterations (default: iters / 4)")  # fmt: skip
    args = p.parse_args(argv)

    def overrides(variant: str) -> list[str]:
        ov = [f"model.name={args.detector}_{HEAD[variant]}", f"evaluation.class_split={args.split}"]
        return ov if variant == "oracle" else [*ov, f"data.class_split={args.split}"]

    runs = run_all(args, overrides)
    rows, data = [], []
    for variant in args.variants:
        if variant not in runs:
            continue
        seeds = runs[variant]
        vals = {k: [get(m, "segm", "novel", k) for m in seeds.values()] for k in NOVEL_KEYS}
        vals["base AP"] = [get(m, "segm", "base", "AP") for m in seeds.values()]
        rows.append([LABELS[variant], *(cell(v) for v in vals.values())])
        data.append({"variant": variant, "seeds": sorted(seeds), "values": vals,
                     "mean": {k: mean(v) for k, v in vals.items()}})  # fmt: skip
    headers = ["method", *(f"novel {k}" for k in NOVEL_KEYS), "base AP"]
    title = f"Table 4.1: partially supervised mask AP ({args.split})"
    text = [markdown_table(title, headers, rows)] if rows else ["(no finished runs)\n"]
    tables = {title: data}
    if args.few_shot:
        fs_title, fs_rows, fs_data = few_shot(args)
        text.append(markdown_table(fs_title, ["method", "K", *NOVEL_KEYS], fs_rows))
        tables[fs_title] = fs_data
    report = "\n".join(text)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(report)
    payload = {"settings": {k: str(v) for k, v in vars(args).items()}, "tables": tables,
               "runs": {v: {str(s): m for s, m in r.items()} for v, r in runs.items()}}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(payload, indent=1))
    return 0


def few_shot(args: argparse.Namespace) -> tuple[str, list[list[str]], list[dict]]:
    """Base training, K-shot fine-tuning and "no base" runs -> (title, rows, data)."""
    from instseg.config import load_config
    from instseg.data.class_split import resolve_split
    from instseg.data.few_shot import sample_k_shot
    from instseg.recipes.image import prepare_data
    from instseg.recipes.image_config import ImageTrainConfig

    cfg = load_config(ImageTrainConfig, args.config, base_overrides(args))
    splits = prepare_data(cfg.data, args.out)  # the shared synthetic set (generated once)
    data = json.loads(splits.train_json.read_text())
    base_ids, novel_ids = resolve_split(data["categories"], "base->novel")
    folder = args.out / "fewshot_data"
    folder.mkdir(parents=True, exist_ok=True)
    base_json = folder / "train_base_only.json"
    if not base_json.is_file():
        anns = [a for a in data["annotations"] if a["category_id"] in set(base_ids)]
        used = {a["image_id"] for a in anns}
        images = [im for im in data["images"] if im["id"] in used]
        base_json.write_text(json.dumps({**data, "images": images, "annotations": anns}))
    data_ov = [
        f"data.train_root={splits.train_root}",
        f"data.test_json={splits.test_json}",
        f"data.test_root={splits.test_root}",
        "evaluation.class_split=base->novel",
        f"model.name={args.detector}_cpmask",
    ]
    ft_iters = args.ft_iters or max(1, args.iters // 4)

    def shots(k: int, seed: int, keep_base: bool) -> Path:
        path = folder / f"train_k{k}_s{seed}{'' if keep_base else '_nobase'}.json"
        if not path.is_file():
            sub = sample_k_shot(data, novel_ids=novel_ids, k=k, seed=seed, keep_base=keep_base)
            path.write_text(json.dumps(sub))
        return path

    names = ["fewshot_base"] + [f"fewshot_k{k}{s}" for k in args.few_shot for s in ("", "_nobase")]
    results: dict[str, dict[int, dict]] = {}
    for name in names:
        for seed in args.seeds:
            if name == "fewshot_base":
                ov = [f"data.train_json={base_json}"]
                iters = args.iters
            else:
                k = int(name.split("_k")[1].split("_")[0])
                keep = not name.endswith("_nobase")
                ov = [f"data.train_json={shots(k, seed, keep)}", f"solver.max_iters={ft_iters}",
                      f"solver.warmup_iters={max(1, ft_iters // 10)}"]  # fmt: skip
                if keep:
                    ov.append(f"model.weights={args.out / 'fewshot_base' / f'seed{seed}'}/model.pt")
                iters = ft_iters
            one = argparse.Namespace(**{**vars(args), "variants": [name], "seeds": [seed]})
            one.iters = iters
            res = run_all(one, lambda _v, ov=ov: [*data_ov, *ov])
            for v, r in res.items():
                results.setdefault(v, {}).update(r)
    rows, out = [], []
    for name in names[1:]:
        if name not in results:
            continue
        k = name.split("_k")[1].split("_")[0]
        label = "CPMask (no base)" if name.endswith("_nobase") else "CPMask (base + fine-tune)"
        vals = {key: [get(m, "segm", "novel", key) for m in results[name].values()]
                for key in NOVEL_KEYS}  # fmt: skip
        rows.append([label, k, *(cell(v) for v in vals.values())])
        out.append({"variant": name, "values": vals, "mean": {a: mean(b) for a, b in vals.items()}})
    return "Table 4.2: few-shot mask AP on the novel classes", rows, out


if __name__ == "__main__":
    raise SystemExit(main())
