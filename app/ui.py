"""The Gradio interface. Minimal until the UI issue lands: the compression path and its paper numbers."""

from __future__ import annotations

import gradio as gr

from explorer import stages as registry


def path_table() -> list[list[object]]:
    rows = []
    for s in registry.STAGES:
        p = s.paper
        rows.append([s.slug, s.title, f"{s.width}x{s.height}", s.steps, p.tflops, p.gpu_ms, p.phone_ms,
                     f"{p.fvd_25fps:g} / {p.fvd_7fps:g}"])
    return rows


def build_app(checkpoints: str | None = None, base: str | None = None) -> gr.Blocks:
    with gr.Blocks(title="MobileVD Explorer") as demo:
        gr.Markdown(
            "# MobileVD Explorer\n"
            "The compression path of Mobile Video Diffusion (Ben Yahia et al., arXiv 2412.07583). "
            f"Numbers below are **from the paper**; cost accounting: {registry.ACCOUNTING}."
        )
        gr.Dataframe(
            value=path_table(),
            headers=["stage", "title", "resolution", "NFE", "TFLOPs", "GPU ms", "phone ms", "FVD 25/7 fps"],
            interactive=False,
        )
    return demo
