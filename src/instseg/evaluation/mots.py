"""MOTS metrics through TrackEval: sMOTSA / MOTSA / MOTSP (CLEAR), IDF1 / IDSW (Identity,
CLEAR) and HOTA (DetA, AssA, LocA).

:func:`evaluate_mots` copies KITTI-MOTS / MOTSChallenge txt files into the folder layout
TrackEval expects (a temporary directory), runs ``trackeval.Evaluator`` with the
``KittiMOTS`` or ``MOTSChallenge`` dataset class, and returns the combined (all sequences)
numbers per class, plus per sequence. Rates are in percent; counts (IDSW, TP, FP, FN, Frag)
are integers. ``sMOTSA`` is TrackEval's CLEAR ``sMOTA`` (soft TP = sum of mask IoUs of
matches), ``MOTSA`` its ``MOTA`` and ``MOTSP`` its ``MOTP``; ``HOTA``/``DetA``/``AssA``/``LocA``
are means over TrackEval's 19 localisation thresholds, as TrackEval reports them.

numpy 2: TrackEval releases before 1.3 use aliases removed in numpy 1.24/2.0 (``np.float``,
``np.int``, ``np.bool``, ``np.object``). :func:`_import_trackeval` scans the installed package
once and, only if it references one of them, defines the missing alias on numpy as the
builtin type it always meant (a process-wide addition, never a change of an existing name).
TrackEval 1.3.0 (installed here) needs no alias.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from instseg.data.mots import read_mots_txt

__all__ = ["evaluate_mots", "read_seqmap", "MOTS_KEYS", "BENCHMARKS"]

BENCHMARKS = ("kitti", "motschallenge")
MOTS_KEYS = ("sMOTSA", "MOTSA", "MOTSP", "IDF1", "IDP", "IDR", "IDSW", "HOTA", "DetA", "AssA",
             "LocA", "TP", "FP", "FN", "Frag", "MT", "ML")  # fmt: skip
_RATE = {"sMOTSA": ("CLEAR", "sMOTA"), "MOTSA": ("CLEAR", "MOTA"), "MOTSP": ("CLEAR", "MOTP"),
         "IDF1": ("Identity", "IDF1"), "IDP": ("Identity", "IDP"), "IDR": ("Identity", "IDR"),
         "HOTA": ("HOTA", "HOTA"), "DetA": ("HOTA", "DetA"), "AssA": ("HOTA", "AssA"),
         "LocA": ("HOTA", "LocA")}  # fmt: skip
_COUNT = {"IDSW": "IDSW", "TP": "CLR_TP", "FP": "CLR_FP", "FN": "CLR_FN", "Frag": "Frag",
          "MT": "MT", "ML": "ML"}  # fmt: skip
_TRACKER = "instseg"
_np_aliases_checked = False

Files = str | Path | Sequence[str | Path] | Mapping[str, str | Path]


def evaluate_mots(
    gt: Files,
    res: Files,
    *,
    benchmark: str = "kitti",
    seqmap: str | Path | None = None,
    seq_lengths: Mapping[str, int] | None = None,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """MOTS metrics of tracker files ``res`` against ground truth ``gt``.

    ``gt`` / ``res``: a folder of ``<seq>.txt`` (a KITTI ``label_02`` sub-folder and the
    MOTSChallenge ``<seq>/gt/gt.txt`` layout are also recognised for ``gt``), a list of files
    (sequence = file stem) or a mapping sequence -> file. Every GT sequence needs a result
    file. Sequence lengths come from ``seq_lengths``, else from ``seqmap`` (KITTI format
    ``<seq> empty <first> <last>`` per line), else from the largest frame number in the
    files (KITTI frames are 0-based, MOTSChallenge 1-based). ``classes`` default:
    car + pedestrian (kitti), pedestrian (motschallenge).

    Returns ``{class: {key: value}}`` for the keys in ``MOTS_KEYS`` (all sequences combined)
    and ``"per_sequence": {seq: {class: {...}}}``.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got '{benchmark}'")
    gt_files = _collect(gt, "ground truth", gt_layout=True)
    res_files = _collect(res, "results", gt_layout=False)
    if seqmap is not None and seq_lengths is None:
        seq_lengths = read_seqmap(seqmap)
        gt_files = {s: gt_files[s] for s in seq_lengths if s in gt_files}
    missing = sorted(set(seq_lengths or gt_files) - set(gt_files))
    if missing:
        raise ValueError(f"no ground-truth file for sequence(s) {missing}")
    seqs = list(seq_lengths) if seq_lengths is not None else sorted(gt_files)
    no_res = [s for s in seqs if s not in res_files]
    if no_res:
        raise ValueError(f"no result file for sequence(s) {no_res}")
    lengths = (
        dict(seq_lengths)
        if seq_lengths is not None
        else {s: _infer_length([gt_files[s], res_files[s]], benchmark) for s in seqs}
    )
    classes = list(classes or (["car", "pedestrian"] if benchmark == "kitti" else ["pedestrian"]))
    te = _import_trackeval()
    with tempfile.TemporaryDirectory(prefix="instseg_mots_") as tmp:
        cfg = _write_layout(Path(tmp), benchmark, seqs, gt_files, res_files)
        cfg.update(
            SEQ_INFO={s: int(lengths[s]) for s in seqs},
            CLASSES_TO_EVAL=classes,
            TRACKERS_TO_EVAL=[_TRACKER],
            PRINT_CONFIG=False,
        )
        raw = run_trackeval(te, benchmark, cfg)
    return _convert(raw, seqs, classes)


def run_trackeval(te: Any, benchmark: str, dataset_config: dict[str, Any]) -> dict[str, Any]:
    """Run TrackEval (HOTA, CLEAR, Identity) quietly; returns ``res[seq][class][metric]``."""
    dataset_cls = te.datasets.KittiMOTS if benchmark == "kitti" else te.datasets.MOTSChallenge
    eval_cfg = {"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False,
                "TIME_PROGRESS": False, "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
                "PLOT_CURVES": False, "LOG_ON_ERROR": None, "BREAK_ON_ERROR": True}  # fmt: skip
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            dataset = dataset_cls(dataset_config)
            evaluator = te.Evaluator(eval_cfg)
            metrics = [te.metrics.HOTA(), te.metrics.CLEAR(), te.metrics.Identity()]
            out, _ = evaluator.evaluate([dataset], metrics)
    except te.utils.TrackEvalException as e:
        raise ValueError(f"TrackEval: {e}\n{log.getvalue()[-2000:]}") from e
    return out[dataset.get_name()][_TRACKER]


def read_seqmap(path: str | Path) -> dict[str, int]:
    """KITTI-MOTS seqmap (``<seq> empty <first> <last>`` per line) -> {seq: last + 1}.
    Sequence names are written as in the file (KITTI uses ``%04d``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: seqmap not found")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 4:
            raise ValueError(f"{path}:{n}: expected '<seq> empty <first> <last>'")
        try:
            out[parts[0]] = int(parts[3]) + 1
        except ValueError as e:
            raise ValueError(f"{path}:{n}: last frame '{parts[3]}' is not an integer") from e
    return out


# ----------------------------------------------------------------------------- helpers
def _collect(x: Files, what: str, *, gt_layout: bool) -> dict[str, Path]:
    if isinstance(x, Mapping):
        files = {str(k): Path(v) for k, v in x.items()}
    elif isinstance(x, (str, Path)):
        d = Path(x)
        if d.is_file():
            files = {d.stem: d}
        elif not d.is_dir():
            raise FileNotFoundError(f"{d}: {what} folder or file not found")
        elif gt_layout and (d / "label_02").is_dir():
            files = {p.stem: p for p in sorted((d / "label_02").glob("*.txt"))}
        elif gt_layout and any(d.glob("*/gt/gt.txt")):
            files = {p.parent.parent.name: p for p in sorted(d.glob("*/gt/gt.txt"))}
        else:
            files = {p.stem: p for p in sorted(d.glob("*.txt"))}
    else:
        files = {Path(p).stem: Path(p) for p in x}
    if not files:
        raise ValueError(f"{x}: no {what} .txt files found")
    for p in files.values():
        if not p.is_file():
            raise FileNotFoundError(f"{p}: {what} file not found")
    return files


def _infer_length(paths: Sequence[Path], benchmark: str) -> int:
    last = max((o.frame for p in paths for o in read_mots_txt(p)), default=-1)
    return last + 1 if benchmark == "kitti" else max(last, 1)


def _write_layout(
    root: Path,
    benchmark: str,
    seqs: Sequence[str],
    gt_files: Mapping[str, Path],
    res_files: Mapping[str, Path],
) -> dict[str, Any]:
    trk = root / "trackers" / _TRACKER / "data"
    trk.mkdir(parents=True)
    for s in seqs:
        gt_dst = (
            root / "gt" / "label_02" / f"{s}.txt"
            if benchmark == "kitti"
            else root / "gt" / s / "gt" / "gt.txt"
        )
        gt_dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(gt_files[s], gt_dst)
        shutil.copyfile(res_files[s], trk / f"{s}.txt")
    cfg: dict[str, Any] = {
        "GT_FOLDER": str(root / "gt"),
        "TRACKERS_FOLDER": str(root / "trackers"),
        "OUTPUT_FOLDER": str(root / "out"),
    }
    if benchmark == "motschallenge":
        cfg["SKIP_SPLIT_FOL"] = True
    return cfg


def _convert(raw: Mapping[str, Any], seqs: Sequence[str], classes: Sequence[str]) -> dict:
    def one(m: Mapping[str, Any]) -> dict[str, float]:
        out = {}
        for key, (metric, field) in _RATE.items():
            out[key] = float(np.mean(m[metric][field])) * 100
        for key, field in _COUNT.items():
            out[key] = int(m["CLEAR"][field])
        return out

    result: dict[str, Any] = {c: one(raw["COMBINED_SEQ"][c]) for c in classes}
    result["per_sequence"] = {s: {c: one(raw[s][c]) for c in classes} for s in seqs}
    return result


def _import_trackeval() -> Any:
    """Import TrackEval quietly (it prints about optional BURST dependencies), applying the
    numpy-2 alias shim described in the module docstring when the package needs it."""
    global _np_aliases_checked
    import importlib.util

    spec = importlib.util.find_spec("trackeval")
    if spec is None or spec.origin is None:
        raise ImportError("TrackEval is not installed (pip install trackeval --no-deps)")
    if not _np_aliases_checked:
        pattern = re.compile(r"\bnp\.(float|int|bool|object)\b(?!_|\d)")
        used = set()
        for f in Path(spec.origin).parent.rglob("*.py"):
            used.update(pattern.findall(f.read_text(errors="ignore")))
        builtin = {"float": float, "int": int, "bool": bool, "object": object}
        for name in used:
            if name not in np.__dict__:
                setattr(np, name, builtin[name])
        _np_aliases_checked = True
    with contextlib.redirect_stdout(io.StringIO()):
        import trackeval
    return trackeval
