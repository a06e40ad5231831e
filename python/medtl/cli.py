"""`medtl` command line (also `python -m medtl`)."""

from __future__ import annotations

import argparse
import sys


def _cmd_demo(_args: argparse.Namespace) -> int:
    from medtl import demo

    return demo.main()


def _cmd_info(_args: argparse.Namespace) -> int:
    from medtl import __version__, caffe_env

    caffe = caffe_env.caffe()
    print(f"medtl {__version__}")
    print(f"pycaffe {caffe.__version__} from {caffe_env.prefix()}")
    print(f"caffe tool {caffe_env.caffe_binary()}")
    for key, value in caffe_env.build_info().items():
        print(f"  {key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtl", description="MedTL-Caffe: Caffe-era medical transfer-learning studies")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="train CifarNet on synthetic data (the make demo job)"
                   ).set_defaults(func=_cmd_demo)
    sub.add_parser("info", help="show the Caffe build medtl uses").set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
