"""The Gradio Space app (`app.py`); installed as `e2_hf.space`, copied into Spaces by `e2-hf build-space`."""
