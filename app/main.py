"""MobileVD Explorer's entry point: parse flags, build the UI, launch. ``app.py`` (the Space's app_file) calls
:func:`main`; it lives in the package so tests import it like any module."""

from __future__ import annotations

import argparse
import os


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from_env_host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")  # a Space sets 0.0.0.0
    from_env_port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    parser = argparse.ArgumentParser(description="MobileVD Explorer (Gradio app)")
    parser.add_argument("--host", default=from_env_host, help="bind address (default: localhost only)")
    parser.add_argument("--port", type=int, default=from_env_port)
    parser.add_argument("--share", action="store_true", help="create a public Gradio share link")
    parser.add_argument("--checkpoints", default=None,
                        help="folder of stage checkpoints (default: ./checkpoints), or a hub repo id OWNER/NAME")
    parser.add_argument("--base", default=None, help="hub id or local folder of a full SVD pipeline")
    parser.add_argument("--placeholders", default="auto", choices=["auto", "all", "off"],
                        help="random-weight development stages: auto = only when no stage folder exists")
    parser.add_argument("--placeholder-scale", default="tiny", choices=["tiny", "micro"],
                        help="size of the development placeholders (micro: fastest, for tests)")
    parser.add_argument("--no-warmup", action="store_true", help="do not count FLOPs in the background at start")
    parser.add_argument("--cache-examples", default="auto", choices=["auto", "on", "off"],
                        help="generate the examples' comparisons before serving, so clicking one shows its videos "
                             "at once (auto: on in a Hugging Face Space, where SPACE_ID is set; off locally)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threads = os.environ.get("MOBILEVD_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    from app.ui import build_app, launch_kwargs
    from explorer.hub import CheckpointsError

    try:
        demo = build_app(checkpoints=args.checkpoints, base=args.base, placeholders=args.placeholders,
                         placeholder_scale=args.placeholder_scale, warm_flops=not args.no_warmup)
    except CheckpointsError as err:
        raise SystemExit(f"app.py: cannot use --checkpoints: {err}") from None
    if args.cache_examples == "on" or (args.cache_examples == "auto" and os.environ.get("SPACE_ID")):
        from app.tab_compare import warm_examples

        done = warm_examples(demo.mvd_context)
        print(f"app.py: cached {len(done['examples'])} example comparison(s) ({', '.join(done['stages'])}, seed "
              f"{done['seed']}) in {done['seconds']:.0f} s before serving", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                **launch_kwargs(demo.mvd_context.out_dir))


if __name__ == "__main__":
    main()
