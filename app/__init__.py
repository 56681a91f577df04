"""Gradio UI of MobileVD Explorer: only interface code; all model math lives in explorer/."""
