"""E2 in the browser: what the selection tokens look at, zero-shot tags per entity, entity-aware search.

The Hub's hosted inference widget does not run custom code, so this Gradio app is how a visitor
tries E2: upload an image to see the patches each entity's selection tokens chose (beside the CLS
token's attention) and its tags per entity; type a query to search a small bundled index, by the
whole image or by one entity's region.

    python space/app.py --model MODEL --index INDEX_DIR [--host 127.0.0.1] [--port 7860]

On a Space, `e2-hf build-space` lays out `app.py` with `model/`, `index/` and a copy of `e2_hf`
beside it; the arguments then default to those folders (or to $E2_MODEL and $E2_INDEX). The index
may also be a Milvus store (`milvus://HOST:PORT` or `https://...`, with the token in the Space's
MILVUS_TOKEN secret; the `milvus` extra in its requirements): `build-space --index` writes its
address into `index.txt` beside `app.py`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import gradio as gr
from PIL import Image, UnidentifiedImageError

from e2_hf.evaluation.embedding import load_for_inference
from e2_hf.images import ImageLimits, ImageSizeError, open_image
from e2_hf.search import search_text
from e2_hf.search.milvus import open_store
from e2_hf.space_bundle import STORE_ADDRESS_FILE
from e2_hf.tagging import candidate_embeddings, catalog_candidates, zero_shot_tags
from e2_hf.visualization import render_selection_figure, selection_maps

HERE = Path(__file__).resolve().parent
WHOLE_IMAGE = "whole image"
TAGS_SHOWN = 5
IMAGE_HEIGHT = 420
# the largest upload decoded: the embedding endpoint's limits (E2_MAX_IMAGE_PIXELS, E2_MAX_IMAGE_ASPECT_RATIO)
UPLOAD_LIMITS = ImageLimits.from_environment()


def open_upload(path: str | Path | None, name: str | None = None) -> Image.Image:
    """The uploaded file as an RGB image, or a `gr.Error` the visitor can act on: no file, not an
    image, an empty one, or one beyond `UPLOAD_LIMITS` (checked from the header, before decoding)."""
    if path is None:
        raise gr.Error("Upload an image first.")
    path = Path(path)
    name = name or path.name
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise gr.Error(f"{name} is not an image this app can read: upload a JPEG, PNG or WebP photo.") from None
    try:
        UPLOAD_LIMITS.check(width, height, name)  # named as the visitor named it, not by the server's path
    except ImageSizeError as error:
        raise gr.Error(f"{error}.") from None
    try:
        return open_image(path)  # decoded, upright, RGB as everywhere else in E2
    except ValueError:
        raise gr.Error(f"{name} is damaged: its pixels cannot be read. Upload another photo.") from None


class E2Space:
    """The model, its processor and the bundled index, with what the two tabs do."""

    def __init__(self, model: str, index_dir: str, candidates: dict[str, list[str]] | None = None):
        self.model_name = model
        self.model, self.processor, _, _ = load_for_inference(model)  # on the GPU when there is one
        self.index = open_store(index_dir)  # a folder, or a Milvus store
        # zero-shot tagging candidates: each entity's distinct tags among the indexed products
        self.candidates = candidates or catalog_candidates(self.index, self.index.entities)
        self.tag_embeds = candidate_embeddings(self.model, self.processor, self.candidates, str(self.model.device))
        self.entities = list(self.model.config.entities)

    def look(self, upload: str | None) -> tuple:
        """An uploaded file -> (selection-map figure, {tag: probability} per entity)."""
        image = open_upload(upload)
        figure = None  # a model without fusion blocks chooses no patches: nothing to draw
        if self.model.config.active_fusion_layers:
            figure = render_selection_figure(selection_maps(self.model, self.processor, [image])).image
        tags = zero_shot_tags(self.model, self.processor, [image], self.candidates, TAGS_SHOWN,
                              tag_embeds=self.tag_embeds)[0]  # fmt: skip
        labels = [{score.tag: score.probability for score in tags.get(entity, [])} for entity in self.entities]
        return (figure, *labels)

    def search(self, query: str, target: str, top_k: float) -> list[tuple]:
        """A text query -> gallery of (thumbnail, caption) from the bundled index."""
        if not query or not query.strip():
            raise gr.Error("Type a query first.")
        entity = None if target == WHOLE_IMAGE else target
        hits = search_text(self.model, self.processor, self.index, query, entity, int(top_k))
        return [
            (self.index.thumbnail(hit.row), f"#{hit.rank} ({hit.score:.3f}) {hit.item.description}") for hit in hits
        ]


def build_demo(space: E2Space) -> gr.Blocks:
    with gr.Blocks(title="E2: fashion representations that look at the details") as demo:
        gr.Markdown(
            "# E2: what a fashion model looks at\n"
            f"Model `{space.model_name}`; entities: {', '.join(space.entities)}; "
            f"{len(space.index)} products in the bundled index."
        )
        with gr.Tab("Selection map and tags"):
            with gr.Row():
                with gr.Column():
                    # a file, not gr.Image: Gradio would decode an image upload itself and answer a
                    # bad one with a generic error; open_upload names the problem instead
                    upload = gr.File(label="Product image", file_types=["image"], type="filepath",
                                     elem_id="upload-image")  # fmt: skip
                    preview = gr.Image(type="pil", label="Uploaded", interactive=False, height=IMAGE_HEIGHT,
                                       elem_id="upload-preview")  # fmt: skip
                figure = gr.Image(type="pil", label="Patches each entity chose | CLS attention", height=IMAGE_HEIGHT,
                                  elem_id="selection-map")  # fmt: skip
            look = gr.Button("Show what E2 looks at", variant="primary", elem_id="look-button")
            with gr.Row():
                labels = [gr.Label(num_top_classes=TAGS_SHOWN, label=entity, elem_id=f"tags-{entity}")
                          for entity in space.entities]  # fmt: skip
            upload.upload(open_upload, inputs=upload, outputs=preview)
            look.click(space.look, inputs=upload, outputs=[figure, *labels])
        with gr.Tab("Search", elem_id="search-tab"):
            with gr.Row():
                query = gr.Textbox(label="Query", placeholder='e.g. "Gucci" or "black wool coat"', elem_id="query")
                target = gr.Dropdown([WHOLE_IMAGE, *space.entities], value=WHOLE_IMAGE, label="Match against")
                top_k = gr.Slider(1, 24, value=8, step=1, label="Results")
            find = gr.Button("Search", variant="primary", elem_id="search-button")
            gallery = gr.Gallery(label="Results", columns=4, elem_id="results")
            find.click(space.search, inputs=[query, target, top_k], outputs=gallery)
            query.submit(space.search, inputs=[query, target, top_k], outputs=gallery)
    return demo


def default_index() -> str:
    """The bundled index folder, or the Milvus store whose address `e2-hf build-space --index` wrote."""
    address = HERE / STORE_ADDRESS_FILE
    return address.read_text(encoding="utf-8").strip() if address.is_file() else str(HERE / "index")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("E2_MODEL", str(HERE / "model")))
    parser.add_argument("--index", default=os.environ.get("E2_INDEX") or default_index())
    parser.add_argument("--candidates", help="JSON file {entity: [tags]} (default: the index's tags)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    candidates = json.loads(Path(args.candidates).read_text(encoding="utf-8")) if args.candidates else None
    demo = build_demo(E2Space(args.model, args.index, candidates))
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts to fetch
    demo.launch(server_name=args.host, server_port=args.port, theme=theme, ssr_mode=False)


if __name__ == "__main__":
    main()
