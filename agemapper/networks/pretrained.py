"""Networks trained elsewhere: a release folder in, a networks folder out, and back.

A **networks folder** has this workflow's layout, ``{contrast}/{sex}/replicate-{r}/
model.safetensors`` (a run's ``results/models`` is one). ``agemapper import-original`` fills one
from the original release's files, named by the release's contrast names
(:data:`RELEASE_NAME`: ``T1_nonlinear_female_1.pth.tar``, the names of ``config/contrasts.tsv``);
each imported network gets a manifest beside it (``manifest.json``: source file, sha256,
contrast, sex, replicate, file format and parameter naming) and the folder a summary
(``manifest.tsv``). Imported files are written read-only, and an import never replaces a
network imported from another file.

Apply mode reads a networks folder and writes nothing into it; planning refuses a networks
folder inside ``results/`` (where rules write) and a training run whose ``results/models``
holds imported networks (:func:`imported_networks`), so that no network of the release is
ever retrained or overwritten.

``agemapper export-original`` writes a networks folder in the release's names
(``{contrast}_{sex}_{replicate}.pth.tar``, the original's ``torch.save(state_dict)``, plus a
JSON sidecar); importing that folder gives back networks with identical predictions.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from agemapper import __version__, paths
from agemapper.errors import ConfigError, InputDataError
from agemapper.io import write_json, write_table
from agemapper.networks import legacy
from agemapper.networks.foreign import sha256
from agemapper.networks.serialization import read_metadata

log = logging.getLogger(__name__)

SEXES = ("female", "male")
RELEASE_NAME = "{contrast}_{sex}_{replicate}"
MANIFEST_FORMAT = "agemapper-import/1"
MANIFEST_COLUMNS = [
    "contrast",
    "sex",
    "replicate",
    "format",
    "naming",
    "source",
    "sha256",
    "model",
]
# Which file of a network the original wrote wins: its final network (saved_models/NAME.pth.tar,
# the best epoch's weights), else the best checkpoint, else the last epoch's; per-epoch
# checkpoints only when named one by one (there is no telling which epoch was meant).
_RANKS = (
    (re.compile(r"^best_checkpoint$"), 1),
    (re.compile(r"^final_checkpoint$"), 2),
    (re.compile(r"^checkpoint_epoch_\d+$"), 3),
)


def _rank(path: Path) -> int:
    stem = legacy.release_stem(path.name)
    return next((rank for pattern, rank in _RANKS if pattern.match(stem)), 0)


def parse_release_name(path: Path, contrasts) -> tuple[str, str, int] | None:
    """(contrast, sex, replicate) from ``{contrast}_{sex}_{replicate}`` (or
    ``{sex}_{contrast}_{replicate}``) in the file's name or, for the original's checkpoint
    layout (``experiments/NAME/best_checkpoint/best_checkpoint.path.tar``), its folders'."""
    names = "|".join(re.escape(c) for c in sorted(contrasts, key=len, reverse=True))
    patterns = [
        re.compile(rf"^(?P<c>{names})[_-](?P<s>female|male)[_-](?:replicate[_-]?)?(?P<r>\d+)$"),
        re.compile(rf"^(?P<s>female|male)[_-](?P<c>{names})[_-](?:replicate[_-]?)?(?P<r>\d+)$"),
    ]
    for part in [legacy.release_stem(path.name), *(p.name for p in path.parents)][:4]:
        for pattern in patterns:
            if m := pattern.match(part):
                return m["c"], m["s"], int(m["r"])
    return None


def release_files(folder, contrasts, names=None) -> dict[tuple[str, str, int], Path]:
    """The file of each network in a release folder, by (contrast, sex, replicate).

    ``names``: a table (``file``, ``contrast``, ``sex``, ``replicate``; files relative to the
    folder) for files not named the release's way. Every weight file must be accounted for:
    an unknown name, two final files for one network, or only per-epoch checkpoints are
    errors naming the files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputDataError("is not a folder", path=folder)
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.name.endswith(legacy.WEIGHT_SUFFIXES)
    )
    if names is not None:
        table = pd.read_csv(names, sep="\t", dtype={"file": str, "contrast": str, "sex": str})
        listed = {
            (folder / f).resolve(): (c, s, int(r))
            for f, c, s, r in table[["file", "contrast", "sex", "replicate"]].itertuples(
                index=False
            )
        }
        files = sorted(listed)
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise InputDataError(f"files named in {names} do not exist: {missing[:3]}")
        keys = dict(listed)
    else:
        keys = {f: parse_release_name(f.relative_to(folder), contrasts) for f in files}
        unknown = [str(f.relative_to(folder)) for f, key in keys.items() if key is None]
        if unknown:
            raise InputDataError(
                f"{len(unknown)} file(s) not named by the release's names "
                f"{RELEASE_NAME}{legacy.WEIGHT_SUFFIXES[0]} (a contrast of the contrast table, "
                f"female or male, a replicate from 1): {', '.join(unknown[:4])}; rename them or "
                "list them in a table given with --names (file, contrast, sex, replicate)",
                path=folder,
            )
    if not files:
        raise InputDataError(
            f"holds no network file ({', '.join(legacy.WEIGHT_SUFFIXES)})", path=folder
        )
    chosen: dict[tuple[str, str, int], Path] = {}
    for key in sorted(set(keys.values())):
        contrast, sex, replicate = key
        if sex not in SEXES or replicate < 1:
            raise InputDataError(
                f"network {contrast}/{sex}/{replicate}: sex must be female or "
                "male and replicates are numbered from 1",
                path=folder,
            )
        mine = [f for f in files if keys[f] == key]
        best = min(_rank(f) for f in mine) if names is None else 0
        top = [f for f in mine if names is not None or _rank(f) == best]
        label = f"{contrast} {sex} replicate {replicate}"
        if best == 3:
            raise InputDataError(
                f"{label} has only per-epoch checkpoints ({', '.join(f.name for f in top[:3])}"
                "...): import the one you mean with agemapper import-original FILE "
                f"{paths.network(contrast, sex, replicate, 'NETWORKS')} --contrast {contrast}",
                path=folder,
            )
        if len(top) > 1:
            raise InputDataError(
                f"{label}: {len(top)} files could be its network "
                f"({', '.join(str(f.relative_to(folder)) for f in top[:3])}); keep one",
                path=folder,
            )
        chosen[key] = top[0]
    return chosen


def _contract(contrast: str, contrasts_table) -> dict:
    from agemapper.images.contrasts import read_contrasts, select

    return select(read_contrasts(contrasts_table), [contrast])[0].as_dict()


def import_network(
    source,
    out,
    contrast: str,
    sex: str,
    replicate: int,
    contrasts_table=None,
    bin_range=legacy.PENG_BINS,
) -> dict:
    """Import one file to ``out`` (a ``model.safetensors``) with its manifest beside it.

    An existing network imported from the same bytes is left as it is; one from another
    file (or trained here) is never replaced.
    """
    out = Path(out)
    manifest = out.parent / paths.IMPORT_MANIFEST
    digest = sha256(source)
    if out.exists():
        old = _read_json(manifest) if manifest.exists() else {}
        if old.get("source", {}).get("sha256") == digest:
            log.info("%s: already imported from the same file, unchanged", out)
            return {**_row(old, out), "status": "unchanged"}
        raise InputDataError(
            "exists and was not imported from this file: imported networks are never replaced "
            f"(remove {out.parent} first to import {source} there)",
            path=out,
        )
    meta = legacy.convert(
        source, out, _contract(contrast, contrasts_table), sex, replicate, bin_range
    )
    record = {
        "format": MANIFEST_FORMAT,
        "contrast": contrast,
        "sex": sex,
        "replicate": int(replicate),
        "source": meta["source"],
        "model": {"file": out.name, "sha256": sha256(out)},
        "statistics_of_training_inputs": "intensity" in meta["input"],
        "imported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "agemapper_version": __version__,
    }
    write_json(manifest, record)
    for path in (out, manifest):  # read-only: imported networks are inputs, never outputs
        os.chmod(path, 0o444)
    for note in meta["source"].get("notes", []):
        log.warning("%s: %s", source, note)
    return {**_row(record, out), "status": "imported"}


def _read_json(path) -> dict:
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputDataError(f"not a readable manifest ({exc})", path=path) from exc


def _row(record: dict, out: Path) -> dict:
    source = record.get("source", {})
    return {
        "contrast": record.get("contrast"),
        "sex": record.get("sex"),
        "replicate": record.get("replicate"),
        "format": source.get("format"),
        "naming": source.get("naming"),
        "source": source.get("file"),
        "sha256": source.get("sha256"),
        "model": str(out),
    }


def import_release(
    folder, networks, contrasts_table=None, names=None, bin_range=legacy.PENG_BINS
) -> pd.DataFrame:
    """Import every network of a release folder into ``networks`` (this workflow's layout)."""
    from agemapper.images.contrasts import read_contrasts

    table = read_contrasts(contrasts_table)
    chosen = release_files(folder, list(table), names)
    rows = []
    for (contrast, sex, replicate), source in chosen.items():
        out = paths.network(contrast, sex, replicate, networks)
        rows.append(
            import_network(source, out, contrast, sex, replicate, contrasts_table, bin_range)
        )
    write_summary(networks)
    return pd.DataFrame(rows)


def write_summary(networks) -> pd.DataFrame:
    """``manifest.tsv``: one row per imported network of the folder."""
    rows = [
        _row(_read_json(m), m.parent / "model.safetensors")
        for m in sorted(Path(networks).glob(f"*/*/replicate-*/{paths.IMPORT_MANIFEST}"))
    ]
    table = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    write_table(Path(networks) / "manifest.tsv", table)
    return table


def imported_networks(networks, contrasts=None, sexes=None) -> list[Path]:
    """Manifests of imported networks in a networks folder (of these contrasts and sexes)."""
    found = []
    for manifest in sorted(Path(networks).glob(f"*/*/replicate-*/{paths.IMPORT_MANIFEST}")):
        contrast, sex = manifest.parts[-4], manifest.parts[-3]
        if (contrasts is None or contrast in contrasts) and (sexes is None or sex in sexes):
            found.append(manifest)
    return found


def training_contract(info: dict) -> dict:
    """What a network trained on a cache stores about its input (``metadata["input"]``):
    the contract (contrast, file, 4D volume, normalisation, scale factor), the source grid
    and its affine, and the training split's intensity summary (``info`` is the training
    cache's JSON sidecar), so that apply mode can check a new cohort against it."""
    from agemapper.images.grids import get_grid

    return {
        **info["contrast"],
        "source_grid": info["source_grid"],
        "affine": [list(row) for row in get_grid(info["contrast"]["resolution"]).affine],
        "intensity": info["intensity"],
    }


def input_reference(weights) -> dict | None:
    """The statistics of the training inputs stored with the networks (their training
    split's intensity summary, :mod:`agemapper.images.intensity`), or ``None`` when they
    carry none (the original release's, Peng et al.'s, or networks trained before they were
    stored). Replicates trained together share one; the first network's is used."""
    summaries = [read_metadata(w).get("input", {}).get("intensity") for w in weights]
    present = [s for s in summaries if s]
    if not present:
        return None
    if len(present) < len(summaries) or any(s != present[0] for s in present):
        log.warning(
            "the networks %s carry different input statistics; the first is used",
            [str(w) for w in weights],
        )
    return present[0]


def missing_networks(networks, contrasts, sexes, replicates) -> list[str]:
    return [
        paths.network(c, s, r, networks)
        for c in contrasts
        for s in sexes
        for r in replicates
        if not Path(paths.network(c, s, r, networks)).is_file()
    ]


def describe(networks, contrasts, sexes, replicates) -> str:
    """One paragraph for the plan: which networks predict and what they carry."""
    weights = [
        paths.network(c, s, r, networks) for c in contrasts for s in sexes for r in replicates
    ]
    imported = imported_networks(networks, contrasts, sexes)
    with_stats = sum(1 for w in weights if read_metadata(w).get("input", {}).get("intensity"))
    text = (
        f"apply mode: {len(weights)} networks from {networks} predict, none is trained; "
        f"they are read only, never written ({len(imported)} imported by agemapper "
        f"import-original, with manifest.json). {with_stats} of {len(weights)} carry the "
        "statistics of their training inputs, against which the new cohort's intensities are "
        "checked"
    )
    if with_stats < len(weights):
        text += (
            "; for the others (the original release's carry none) each subject is checked "
            "against the cohort itself and the scale factors are estimated from it "
            "(results/qc/scale_factors.tsv)"
        )
    return text + "."


# ----------------------------------------------------------------------------- export


def export_networks(networks, out, contrasts=None) -> pd.DataFrame:
    """Every network of a networks folder, in the release's names and the original's format."""
    from agemapper.networks.training import load_model

    rows = []
    found = sorted(Path(networks).glob("*/*/replicate-*/model.safetensors"))
    for weights in found:
        contrast, sex, rep = weights.parts[-4], weights.parts[-3], weights.parts[-2]
        if contrasts and contrast not in contrasts:
            continue
        replicate = int(rep.removeprefix("replicate-"))
        model, meta = load_model(weights)
        name = RELEASE_NAME.format(contrast=contrast, sex=sex, replicate=replicate)
        target = Path(out) / f"{name}.pth.tar"
        try:
            sidecar = legacy.export(model, meta, target)
        except InputDataError as exc:
            raise InputDataError(exc.problem, path=weights) from exc
        why = legacy.loadable_by_original(meta["model"], meta["input"]["shape"])
        if why:
            log.warning("%s: %s", target, why)
        rows.append(
            {
                "contrast": contrast,
                "sex": sex,
                "replicate": replicate,
                "naming": sidecar["exported"]["naming"],
                "file": str(target),
                "original_code_loads_it": not why,
            }
        )
    if not rows:
        raise InputDataError(
            "holds no network ({contrast}/{sex}/replicate-{r}/model.safetensors)", path=networks
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- command line


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "original",
        help="a network file of the original release (state dict, training checkpoint or "
        "whole-model pickle; also Peng et al.'s SFCN), or a folder of them named "
        f"{RELEASE_NAME}.pth.tar",
    )
    parser.add_argument(
        "out",
        help="for a file: the model to write (.safetensors); for a folder: the networks "
        "folder to fill ({contrast}/{sex}/replicate-{r}/model.safetensors)",
    )
    parser.add_argument("--contrast", help="a file's contrast, e.g. T1_nonlinear")
    parser.add_argument(
        "--contrasts-table",
        default=None,
        help="contrast table (default: config/contrasts.tsv of the repository the package is in)",
    )
    parser.add_argument("--sex", default="", help="a file's sex: female or male")
    parser.add_argument("--replicate", type=int, default=1, help="a file's replicate (from 1)")
    parser.add_argument(
        "--names",
        default=None,
        help="folder import: a table (file, contrast, sex, replicate) for files not named the "
        "release's way",
    )
    parser.add_argument(
        "--bin-range",
        type=float,
        nargs=2,
        default=list(legacy.PENG_BINS),
        metavar=("LOW", "HIGH"),
        help="SFCN age-bin range in years (default 42 82, Peng et al.'s)",
    )


def run_import(args: argparse.Namespace) -> pd.DataFrame:
    if Path(args.original).is_dir():
        if args.contrast or args.sex:
            raise ConfigError("--contrast and --sex name one file; a folder's files name their own")
        table = import_release(
            args.original, args.out, args.contrasts_table, args.names, args.bin_range
        )
        print(
            f"{args.out}: {int((table.status == 'imported').sum())} networks imported, "
            f"{int((table.status == 'unchanged').sum())} unchanged "
            f"(manifest: {Path(args.out) / 'manifest.tsv'})"
        )
        return table
    if not args.contrast:
        raise ConfigError("importing one file needs its --contrast (e.g. T1_nonlinear)")
    if args.sex and args.sex not in SEXES:
        raise ConfigError(f"--sex {args.sex!r} is not female or male")
    row = import_network(
        args.original,
        args.out,
        args.contrast,
        args.sex,
        args.replicate,
        args.contrasts_table,
        args.bin_range,
    )
    print(f"{args.out}: {row['status']} ({row['format']}, {row['naming']})")
    return pd.DataFrame([row])


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "networks",
        help="a networks folder ({contrast}/{sex}/replicate-{r}/model.safetensors), e.g. "
        "results/models",
    )
    parser.add_argument("out", help=f"folder to write {RELEASE_NAME}.pth.tar (+ .json) into")
    parser.add_argument("--contrasts", nargs="+", default=None, help="only these contrasts")


def run_export(args: argparse.Namespace) -> pd.DataFrame:
    table = export_networks(args.networks, args.out, args.contrasts)
    loadable = int(table.original_code_loads_it.sum())
    print(
        f"{args.out}: {len(table)} networks exported ({loadable} loadable by the original "
        "code, or Peng et al.'s for SFCN; all by agemapper import-original)"
    )
    return table
