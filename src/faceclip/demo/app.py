"""The Gradio page: upload a photo, check the aligned face, write a prompt, generate, download PNGs.

The page only wires widgets to :mod:`faceclip.demo.handlers`. Safety settings live in :func:`launch_demo`:
loopback address, a queue with a concurrency limit, an upload size limit, and file serving limited to the
app's own output folder (Gradio serves nothing else from disk but its upload cache).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faceclip.demo import handlers
from faceclip.demo.handlers import DemoError, FormValues
from faceclip.generation import MAX_SEED, random_seed
from faceclip.pipelines.sdxl.family import LICENSE_NOTICE as NONCOMMERCIAL_NOTICE

if TYPE_CHECKING:  # pragma: no cover
    import gradio

logger = logging.getLogger(__name__)

INTRO = """\
# FaceCLIP-SDXL
Upload one photo of a face, check the aligned crop the model will see, describe the picture you want,
and generate. Each result is a PNG that carries its prompt, seed and settings in its metadata.
"""

FACE_HINT = "Upload a photo with one clearly visible face (JPEG, PNG or WebP)."

_CSS = "#face-info { min-height: 2.5em; }"


def default_settings(pipe: object | None = None) -> FormValues:
    """The form's starting values: the family's negative prompt, steps and guidance, and the pipeline's
    default size (the released portrait size; a small one for tiny components), as every surface uses."""
    from faceclip.registry import FAMILIES, family_of

    defaults = family_of(pipe).defaults if pipe is not None else FAMILIES[0].defaults
    height, width = pipe.default_size if pipe is not None else (defaults.height, defaults.width)
    return FormValues(
        prompt=handlers.EXAMPLE_PROMPTS[0],
        negative_prompt=defaults.negative_prompt,
        num_images=2,
        steps=defaults.num_inference_steps,
        guidance_scale=defaults.guidance_scale,
        width=width,
        height=height,
    )


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the page and its server.

    Attributes:
        output_dir: where generated PNGs are written; the only folder the server may serve besides uploads.
        model_name: shown in the page and written into each PNG's metadata.
        defaults: the values the form starts with.
        max_images: the most images one request may ask for.
        max_steps: the most denoising steps one request may ask for.
        queue_size: requests allowed to wait; more are refused with a "queue full" message. One generation
            and one face detection run at a time: a pipeline is not thread-safe (its scheduler holds the state
            of the current run), nor is an OpenCV network.
        max_file_size: upload size limit, e.g. ``"10mb"``.
        show_license_notice: show the non-commercial licence of the released weights.
        random_weights: the model has random weights (``tiny-random``): the page says its images are noise.
    """

    output_dir: Path = Path("outputs/demo")
    model_name: str = ""
    defaults: FormValues = field(default_factory=default_settings)
    max_images: int = 4
    max_steps: int = 100
    queue_size: int = 16
    max_file_size: str = "10mb"
    show_license_notice: bool = True
    random_weights: bool = False


RANDOM_WEIGHTS_NOTICE = (
    "**This model has random weights** (`tiny-random`): its images are noise. It shows how the page works; "
    "start the demo with the released weights for real photos."
)


def import_gradio():
    """Import gradio with analytics off (no calls home), or explain how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio
    except ImportError as error:
        raise ImportError('The demo needs gradio: pip install "faceclip[demo]"') from error
    return gradio


class _Callbacks:
    """What the page's events run: a photo was chosen, Generate was clicked (the layout is in create_demo)."""

    def __init__(self, gr, pipe: handlers.DemoPipeline, config: DemoConfig, output_dir: Path):
        self.gr, self.pipe, self.config, self.output_dir = gr, pipe, config, output_dir

    def on_photo(self, payload: Any, choice: str | None = None):
        gr = self.gr
        path = _payload_path(payload)
        no_choice = gr.Radio(choices=[], value=None, visible=False)
        if path is None:
            return None, None, None, FACE_HINT, no_choice
        try:
            face_index = int(choice) - 1 if choice else None
            preview = handlers.preview_face(self.pipe, handlers.read_photo(path), face_index=face_index)
            chosen = handlers.choose_face(preview, path, _payload_name(payload))  # photo's name and SHA-256
        except DemoError as error:  # the user's to fix: say so in the page, keep the page usable
            logger.info("photo refused: %s", error)
            gr.Warning(str(error), title="Cannot use this photo")
            return None, None, None, f"**Cannot use this photo.** {error}", no_choice
        except Exception:
            logger.exception("face preparation failed")
            raise gr.Error(
                "Something went wrong while reading this photo; the details are in the server log.",
                title="Cannot use this photo",
                print_exception=False,
            ) from None
        choices = [str(i + 1) for i in range(preview.num_faces)]
        face_choice = gr.Radio(
            choices=choices, value=choices[preview.face_index], visible=preview.num_faces > 1
        )
        return chosen, preview.annotated, preview.aligned, preview.message, face_choice

    def on_generate(self, face, prompt, negative_prompt, num_images, steps, guidance, seed, size, progress):
        gr, config = self.gr, self.config
        if face is None:
            gr.Warning("Upload a photo with a face first.", title="No face yet")
            yield gr.skip(), gr.skip()
            return
        try:
            width, height = handlers.size_from_label(size)
            settings = FormValues(
                prompt=prompt, negative_prompt=negative_prompt, num_images=num_images, steps=steps,
                guidance_scale=guidance, seed=seed, width=width, height=height,
            ).to_settings(max_images=config.max_images, max_steps=config.max_steps)  # fmt: skip
        except DemoError as error:
            gr.Warning(str(error), title="Check the settings")
            yield gr.skip(), gr.skip()
            return
        progress(0.0, desc="Starting")
        paths: list[str] = []
        try:
            for path in handlers.generate_images(
                self.pipe, face, settings, self.output_dir, model_name=config.model_name,
                on_progress=lambda fraction, desc: progress(fraction, desc=desc),
            ):  # fmt: skip
                paths.append(str(path))
                yield paths, paths
        except Exception as error:
            logger.exception("generation failed")
            raise gr.Error(
                _generation_failure(error), title="Generation failed", print_exception=False
            ) from None


def create_demo(pipe: handlers.DemoPipeline, config: DemoConfig | None = None) -> gradio.Blocks:
    """Build the page around a loaded pipeline.

    Args:
        pipe: a loaded pipeline, e.g. ``load_pipeline("tiny-random")``, already on its device.
        config: page and server settings.

    Returns:
        A ``gradio.Blocks`` with its queue configured; start it with :func:`launch_demo`.
    """
    gr = import_gradio()
    config = config or DemoConfig()
    output_dir = Path(config.output_dir).resolve()  # fixed now: the working directory may change later
    defaults = config.defaults
    size_labels = list(handlers.SIZES)
    default_size = next(
        (label for label, size in handlers.SIZES.items() if size == (defaults.width, defaults.height)),
        f"Custom {defaults.width}×{defaults.height}",
    )
    if default_size not in size_labels:
        size_labels.append(default_size)

    callbacks = _Callbacks(gr, pipe, config, output_dir)
    progress_tracker = gr.Progress()  # Gradio fills in a per-request tracker for this default

    def on_generate(
        face, prompt, negative, num_images, steps, guidance, seed, size, progress=progress_tracker
    ):
        # Gradio finds the progress tracker by this signature's default, so the method is wrapped here.
        yield from callbacks.on_generate(
            face, prompt, negative, num_images, steps, guidance, seed, size, progress
        )

    # delete_cache: every hour, drop uploads and served copies older than a day from Gradio's cache.
    with gr.Blocks(title="FaceCLIP demo", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(INTRO)
        if config.random_weights:
            gr.Markdown(RANDOM_WEIGHTS_NOTICE, elem_id="random-weights")
        if config.show_license_notice:
            gr.Markdown(
                f"_{NONCOMMERCIAL_NOTICE}_" + (f" Model: `{config.model_name}`." if config.model_name else "")
            )
        face_state = gr.State(None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                photo = gr.Image(
                    label="1. Face photo",
                    type="filepath",
                    sources=["upload", "clipboard"],
                    height=300,
                    elem_id="photo",
                )
                with gr.Row():
                    detected = gr.Image(
                        label="Detected face", interactive=False, height=220, elem_id="detected"
                    )
                    aligned = gr.Image(
                        label="Aligned face (model input)", interactive=False, height=220, elem_id="aligned"
                    )
                face_info = gr.Markdown(FACE_HINT, elem_id="face-info")
                face_choice = gr.Radio(
                    [], label="Face (largest first)", visible=False, interactive=True, elem_id="face-choice"
                )
                prompt = gr.Textbox(label="2. Prompt", value=defaults.prompt, lines=2, elem_id="prompt")
                gr.Examples(
                    [[text] for text in handlers.EXAMPLE_PROMPTS], inputs=[prompt], label="Example prompts"
                )
                negative = gr.Textbox(label="Negative prompt", value=defaults.negative_prompt, lines=1)
                with gr.Accordion("Settings", open=True):
                    with gr.Row():
                        num_images = gr.Slider(
                            1, config.max_images, value=defaults.num_images, step=1, label="Number of images"
                        )
                        steps = gr.Slider(1, config.max_steps, value=defaults.steps, step=1, label="Steps")
                    with gr.Row():
                        guidance = gr.Slider(
                            0.0, 15.0, value=defaults.guidance_scale, step=0.5, label="Guidance scale"
                        )
                        size = gr.Dropdown(size_labels, value=default_size, label="Size (width×height)")
                    with gr.Row(equal_height=True):
                        seed = gr.Number(
                            value=defaults.seed,
                            precision=0,
                            minimum=0,
                            maximum=MAX_SEED,
                            label="Seed",
                            scale=4,
                            elem_id="seed",
                        )
                        randomise = gr.Button("Random seed", scale=1, elem_id="randomise")
                generate = gr.Button("3. Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=6):
                gallery = gr.Gallery(
                    label="Results",
                    columns=2,
                    height=640,
                    object_fit="contain",
                    format="png",
                    buttons=["download", "fullscreen"],
                    interactive=False,
                    elem_id="gallery",
                )
                files = gr.File(
                    label="PNG files (with prompt, seed and settings in the metadata)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="files",
                )

        face_outputs = [face_state, detected, aligned, face_info, face_choice]
        photo.change(
            lambda: (None, None, None, "Looking for a face…", gr.skip()),
            outputs=face_outputs,
            queue=False,
            show_progress="hidden",
        ).then(
            callbacks.on_photo,
            inputs=photo,
            outputs=face_outputs,
            preprocess=False,
            concurrency_id="face",
            concurrency_limit=1,
        )
        face_choice.input(
            callbacks.on_photo,
            inputs=[photo, face_choice],
            outputs=face_outputs,
            preprocess=False,
            concurrency_id="face",
            concurrency_limit=1,
        )
        randomise.click(random_seed, outputs=seed, queue=False, show_progress="hidden")
        generate.click(
            on_generate,
            inputs=[face_state, prompt, negative, num_images, steps, guidance, seed, size],
            outputs=[gallery, files],
            concurrency_id="generate",
            concurrency_limit=1,
        )
    demo.queue(max_size=config.queue_size, default_concurrency_limit=1)
    return demo


def launch_demo(
    demo: gradio.Blocks,
    config: DemoConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    block: bool = True,
    quiet: bool = False,
) -> str:
    """Serve ``demo`` (from :func:`create_demo`) with the demo's safety settings.

    Args:
        demo: the page.
        config: the settings the page was built with (upload limit, output folder).
        host: the address to listen on; the default serves this machine only. ``"0.0.0.0"`` serves the network.
        port: the port (``None``: Gradio picks a free one from 7860 up).
        share: also open a public ``*.gradio.live`` link (sends traffic through Gradio's servers).
        block: keep the calling thread until the server stops (False: return at once, e.g. in tests).
        quiet: do not print the URL.

    Returns:
        The local URL of the page.
    """
    config = config or DemoConfig()
    output_dir = Path(config.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if share:
        logger.warning("--share: anyone with the public link can use this demo and your machine's GPU.")
    _, local_url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=not block,
        quiet=quiet,
        show_error=False,
        max_file_size=config.max_file_size,
        allowed_paths=[str(output_dir)],
        ssr_mode=False,
        enable_monitoring=False,
        mcp_server=False,
        pwa=False,
        footer_links=["gradio"],
        css=_CSS,
    )
    return local_url


def _payload_name(payload: Any) -> str | None:
    """The uploaded file's name on the user's machine, when Gradio sent it."""
    return payload.get("orig_name") if isinstance(payload, dict) else None


def _payload_path(payload: Any) -> str | None:
    """The server-side path of an uploaded file (a Gradio ``FileData`` dict, or a plain path)."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return payload.get("path")
    return str(payload)


def _generation_failure(error: Exception) -> str:
    if "out of memory" in str(error).lower():
        return "The GPU ran out of memory. Try fewer images or a smaller size."
    return "Something went wrong while generating; the details are in the server log. Try again or change the settings."
