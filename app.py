"""MobileVD Explorer: entry point only (parse flags, build the UI, launch). The Space's app_file."""

from __future__ import annotations

import argparse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="MobileVD Explorer (Gradio app)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: localhost only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="create a public Gradio share link")
    parser.add_argument("--checkpoints", default=None, help="folder of stage checkpoints (default: ./checkpoints)")
    parser.add_argument("--base", default=None, help="hub id or local folder of a full SVD pipeline")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from app.ui import build_app

    demo = build_app(checkpoints=args.checkpoints, base=args.base)
    demo.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
