"""The ``agemapper`` command: the package's tools, one subcommand each.

    agemapper --help
    agemapper import-original ORIGINAL.pth.tar OUT/model.safetensors --contrast T1_nonlinear
    agemapper import-original RELEASE_FOLDER networks
    agemapper export-original results/models exported
    agemapper import-splits RELEASE_DIR datasets/ukb_subjects.tsv
    agemapper import-contrasts scaling_values_simple.csv config/contrasts.tsv

(``python -m agemapper`` is the same command.) A tool is added by writing a function that
fills its argparse subparser and returns what runs it, and listing it in ``TOOLS``.
"""

from __future__ import annotations

import argparse
import sys

from agemapper import __version__
from agemapper.errors import AgeMapperError


def _import_original(sub: argparse.ArgumentParser):
    from agemapper.networks import pretrained

    pretrained.add_import_arguments(sub)
    return pretrained.run_import


def _export_original(sub: argparse.ArgumentParser):
    from agemapper.networks import pretrained

    pretrained.add_export_arguments(sub)
    return pretrained.run_export


def _import_splits(sub: argparse.ArgumentParser):
    sub.add_argument(
        "release", help="folder of the release's {sex}_{split}.txt and {sex}_{split}_age.npy files"
    )
    sub.add_argument("out", help="the subject table to write (TSV)")
    sub.add_argument(
        "--small", action="store_true", help="read the *_small selection (no test halves)"
    )

    def run(args) -> None:
        from agemapper.images.subjects import read_released, validate
        from agemapper.io import write_table

        table = validate(read_released(args.release, small=args.small), source=args.release)
        write_table(args.out, table)
        print(f"{args.out}: {len(table)} subjects")

    return run


def _import_contrasts(sub: argparse.ArgumentParser):
    sub.add_argument("release", help="the release's scaling_values_simple.csv")
    sub.add_argument("out", help="the contrast table to write (TSV)")

    def run(args) -> None:
        from agemapper.images.contrasts import from_released_table, read_contrasts
        from agemapper.io import write_table

        write_table(args.out, from_released_table(args.release))
        print(f"{args.out}: {len(read_contrasts(args.out))} contrasts")

    return run


# name -> (one-line help, function that sets up the subparser and returns the runner)
TOOLS = {
    "import-original": (
        "convert a network of the original AgeMapper release (state dict, training checkpoint "
        "or whole-model pickle, read without running pickled code; also Peng et al.'s SFCN), "
        "or a folder of them by their release names, to this package's safetensors models "
        "with their input contract and a manifest",
        _import_original,
    ),
    "export-original": (
        "write networks of this workflow in the original release's names and format "
        "({contrast}_{sex}_{replicate}.pth.tar state dicts, plus a JSON sidecar)",
        _export_original,
    ),
    "import-splits": (
        "convert the release's subject split files into a subject table "
        "(how datasets/ukb_subjects*.tsv were made)",
        _import_splits,
    ),
    "import-contrasts": (
        "convert the release's scaling_values_simple.csv into a contrast table "
        "(how config/contrasts.tsv was made)",
        _import_contrasts,
    ),
}


def parser(argv=()) -> argparse.ArgumentParser:
    """The command line; only the tool named in ``argv`` gets its arguments (and imports its
    modules: ``agemapper --help`` does not load torch).
    """
    chosen = next((a for a in argv if a in TOOLS), None)
    top = argparse.ArgumentParser(
        prog="agemapper",
        description="Tools of the AgeMapper workflow (brain ages from UK Biobank MRI). The "
        "pipeline itself runs with Snakemake (see README.md).",
    )
    top.add_argument("--version", action="version", version=f"agemapper {__version__}")
    subs = top.add_subparsers(dest="tool", metavar="TOOL", required=True)
    for name, (help_text, setup) in TOOLS.items():
        sub = subs.add_parser(
            name, help=help_text, description=help_text[0].upper() + help_text[1:]
        )
        if name == chosen:
            sub.set_defaults(run=setup(sub))
    return top


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(argv).parse_args(argv)
    try:
        args.run(args)
    except AgeMapperError as exc:  # a clear one-line error, not a traceback
        print(f"agemapper {args.tool}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
