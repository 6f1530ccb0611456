"""The Gradio page: choose a model, upload a photo, check the aligned face, write a prompt, generate, download
PNGs.

The page only wires widgets to :mod:`faceclip.demo.handlers` and :mod:`faceclip.demo.models`. Safety settings
live in :func:`launch_demo`: loopback address, a queue with a concurrency limit, an upload size limit, and file
serving limited to the app's own output folder (Gradio serves nothing else from disk but its upload cache).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from faceclip.demo import handlers
from faceclip.demo.handlers import DemoError, FormValues
from faceclip.demo.models import DemoModel, ModelPool
from faceclip.generation import MAX_SEED, random_seed

if TYPE_CHECKING:  # pragma: no cover
    import gradio

logger = logging.getLogger(__name__)

INTRO = """\
# FaceCLIP
Upload one photo of a face, check the aligned crop the model will see, describe the picture you want,
and generate. Each result is a PNG that carries its prompt, seed and settings in its metadata.
"""

FACE_HINT = "Upload a photo with one clearly visible face (JPEG, PNG or WebP)."

_CSS = "#face-info { min-height: 2.5em; }"


def default_settings(pipe: object | None = None) -> FormValues:
    """The form's starting values for ``pipe``: its family's negative prompt, steps, guidance and true CFG
    (``None`` for families without), and the pipeline's default size (the released portrait size; a small one
    for tiny components), as every surface uses. Without a pipeline: the default family's."""
    from faceclip.registry import FAMILIES

    defaults = handlers.family_defaults(pipe) if pipe is not None else FAMILIES[0].defaults
    height, width = pipe.default_size if pipe is not None else (defaults.height, defaults.width)
    return FormValues(
        prompt=handlers.EXAMPLE_PROMPTS[0],
        negative_prompt=defaults.negative_prompt,
        num_images=2,
        steps=defaults.num_inference_steps,
        guidance_scale=defaults.guidance_scale,
        width=width,
        height=height,
        true_cfg_scale=defaults.true_cfg_scale,
    )


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the page and its server.

    Attributes:
        output_dir: where generated PNGs are written; the only folder the server may serve besides uploads.
        model_name: for a single pipeline given to :func:`create_demo`: shown in the page and written into each
            PNG's metadata (a :class:`~faceclip.demo.models.ModelPool` names its own models).
        defaults: the values the form starts with, for the first model; the others start from their family's
            (:func:`default_settings`).
        max_images: the most images one request may ask for.
        max_steps: the most denoising steps one request may ask for.
        queue_size: requests allowed to wait; more are refused with a "queue full" message. One generation
            (or model switch) and one face detection run at a time: a pipeline is not thread-safe (its
            scheduler holds the state of the current run), nor is an OpenCV network.
        max_file_size: upload size limit, e.g. ``"10mb"``.
        show_license_notice: show the licence of the selected model's weights (random weights have none).
        random_weights: for a single pipeline: it has random weights (``tiny-random``): the page says its
            images are noise (a pool's models say it themselves, :attr:`DemoModel.random_weights`).
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


def random_weights_notice(model: DemoModel) -> str:
    """The page's warning for a model with random weights."""
    return (
        f"**This model has random weights** (`{model.name}`): its images are noise. It shows how the page "
        "works; start the demo with the released weights for real photos."
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


def pool_of_one(pipe: handlers.DemoPipeline, config: DemoConfig) -> ModelPool:
    """A :class:`ModelPool` of one loaded pipeline, named and flagged by ``config``; its licence notice is its
    family's (:func:`faceclip.registry.family_of`; none for a stand-in of no family)."""
    from faceclip.registry import ModelArgumentError, family_of

    try:
        family = family_of(pipe)
        title, notice = family.title, family.license_notice
    except ModelArgumentError:
        title, notice = "", ""
    notice = "" if config.random_weights else notice
    return ModelPool.single(pipe, DemoModel(config.model_name, title, config.random_weights, notice))


class _Callbacks:
    """What the page's events run: a model was chosen, a photo was chosen, Generate was clicked (the layout is
    in create_demo)."""

    def __init__(self, gr, pool: ModelPool, config: DemoConfig, output_dir: Path):
        self.gr, self.pool, self.config, self.output_dir = gr, pool, config, output_dir

    def form_values(self, name: str, pipe: handlers.DemoPipeline) -> FormValues:
        """The form's values for model ``name``: the configured ones for the first model, else its family's."""
        return self.config.defaults if name == self.pool.models[0].name else default_settings(pipe)

    def on_model(self, name: str, session_name: str):
        """Load the chosen model and fill the form with its defaults; on failure, say so and keep the last one.

        Returns updates for: the menu, the session's model, the model line, the random-weights notice, the
        licence notice, then :func:`_form_updates`'s widgets.
        """
        gr = self.gr
        try:
            pipe = self.pool.select(name)
        except DemoError as error:
            gr.Warning(str(error), title="Cannot load this model")
            kept = self.pool.model(session_name)
            keep = (gr.skip(),) * (2 + len(_FORM_FIELDS))
            return (kept.name, kept.name, f"**Model not changed.** {error}", *keep)
        model = self.pool.model(name)
        notices = _notice_updates(gr, model, self.config)
        form = _form_updates(gr, handlers.family_defaults(pipe), self.form_values(name, pipe))
        return (name, name, *notices, *form)

    def on_photo(self, payload: Any, choice: str | None = None):
        gr = self.gr
        path = _payload_path(payload)
        no_choice = gr.Radio(choices=[], value=None, visible=False)
        if path is None:
            return None, None, None, FACE_HINT, no_choice
        try:
            face_index = int(choice) - 1 if choice else None
            # The aligned face does not depend on the model (a 448 x 448 crop for both families), so the
            # pipeline loaded now prepares it, whichever model the session uses.
            pipe = self.pool.current
            preview = handlers.preview_face(pipe, handlers.read_photo(path), face_index=face_index)
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

    def on_generate(self, face, model_name, form: FormValues, size, progress):
        """Generate with the session's model; yields (gallery, files) as each image is saved."""
        gr, config = self.gr, self.config
        if face is None:
            gr.Warning("Upload a photo with a face first.", title="No face yet")
            yield gr.skip(), gr.skip()
            return
        try:
            width, height = handlers.size_from_label(size)
            form = replace(form, width=width, height=height)
            form.to_settings(config.max_images, config.max_steps)  # the checks that need no model, first
            pipe = self.pool.select(model_name)  # another session may have switched models meanwhile
            settings = handlers.settings_for(pipe, form, config.max_images, config.max_steps)
        except DemoError as error:
            gr.Warning(str(error), title="Cannot generate")
            yield gr.skip(), gr.skip()
            return
        progress(0.0, desc="Starting")
        paths: list[str] = []
        try:
            for path in handlers.generate_images(
                pipe, face, settings, self.output_dir, model_name=self.pool.model(model_name).name,
                on_progress=lambda fraction, desc: progress(fraction, desc=desc),
            ):  # fmt: skip
                paths.append(str(path))
                yield paths, paths
        except Exception as error:
            logger.exception("generation failed")
            raise gr.Error(
                _generation_failure(error), title="Generation failed", print_exception=False
            ) from None


_FORM_FIELDS = ("negative", "steps", "guidance", "true_cfg", "size")
"""The widgets that follow the selected model's family, in the order :func:`_form_updates` returns them."""


def _form_state(defaults, values: FormValues) -> SimpleNamespace:
    """What the family-dependent widgets show for a family's ``defaults`` and a model's starting ``values``:
    guidance labelled as distilled guidance where the family has true CFG, the true CFG slider only there,
    and the sizes offered."""
    distilled = handlers.uses_distilled_guidance(defaults)
    size_labels, size = handlers.size_choices(values.width, values.height)
    true_cfg = values.true_cfg_scale if values.true_cfg_scale is not None else defaults.true_cfg_scale
    if distilled:
        label = "Distilled guidance"
        info = "FLUX's guidance input, not classifier-free guidance: prompt adherence comes from True CFG"
    else:
        label, info = "Guidance scale", "classifier-free guidance: higher follows the prompt more closely"
    return SimpleNamespace(
        negative=values.negative_prompt, steps=values.steps, guidance=values.guidance_scale,
        guidance_label=label, guidance_info=info, true_cfg=true_cfg if distilled else 1.0,
        show_true_cfg=distilled, size_labels=size_labels, size=size,
    )  # fmt: skip


def _form_updates(gr, defaults, values: FormValues) -> tuple:
    """Updates of :data:`_FORM_FIELDS` for a family's ``defaults`` and a model's starting ``values``."""
    state = _form_state(defaults, values)
    return (
        gr.Textbox(value=state.negative),
        gr.Slider(value=state.steps),
        gr.Slider(value=state.guidance, label=state.guidance_label, info=state.guidance_info),
        gr.Slider(value=state.true_cfg, visible=state.show_true_cfg),
        gr.Dropdown(choices=state.size_labels, value=state.size),
    )


def _model_line(model: DemoModel) -> str:
    return f"Model: `{model.name}`" + (f" ({model.family_title})" if model.family_title else "")


def _notices(model: DemoModel, config: DemoConfig) -> tuple[tuple[str, bool], ...]:
    """``(text, visible)`` of the model line, the random-weights notice and the licence notice for ``model``."""
    licence = model.license_notice if config.show_license_notice else ""
    random_weights = random_weights_notice(model) if model.random_weights else ""
    return (
        (_model_line(model), True),
        (random_weights, bool(random_weights)),
        (f"_{licence}_" if licence else "", bool(licence)),
    )


def _notice_updates(gr, model: DemoModel, config: DemoConfig) -> tuple:
    """Updates of the model line and the notices (call outside the layout: a component made there is shown)."""
    return tuple(gr.Markdown(text, visible=visible) for text, visible in _notices(model, config))


def create_demo(pipe: handlers.DemoPipeline | ModelPool, config: DemoConfig | None = None) -> gradio.Blocks:
    """Build the page around a loaded pipeline, or a pool of models to choose from.

    Args:
        pipe: a loaded pipeline, e.g. ``load_pipeline("tiny-random")``, already on its device; or a
            :class:`~faceclip.demo.models.ModelPool` (a "Model" menu when it holds more than one).
        config: page and server settings.

    Returns:
        A ``gradio.Blocks`` with its queue configured; start it with :func:`launch_demo`.
    """
    gr = import_gradio()
    config = config or DemoConfig()
    pool = pipe if isinstance(pipe, ModelPool) else pool_of_one(pipe, config)
    output_dir = Path(config.output_dir).resolve()  # fixed now: the working directory may change later
    callbacks = _Callbacks(gr, pool, config, output_dir)
    # delete_cache: every hour, drop uploads and served copies older than a day from Gradio's cache.
    with gr.Blocks(title="FaceCLIP demo", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(INTRO)
        page = _model_widgets(gr, pool, config)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                _photo_widgets(gr, page)
                _prompt_widgets(gr, page, pool, config)
            with gr.Column(scale=6):
                _result_widgets(gr, page)
        _wire_events(gr, page, callbacks)
    demo.queue(max_size=config.queue_size, default_concurrency_limit=1)
    return demo


def _model_widgets(gr, pool: ModelPool, config: DemoConfig) -> SimpleNamespace:
    """The model menu (shown with more than one model), the session's model and the model's notices."""
    first = pool.models[0]
    page = SimpleNamespace()
    page.model = gr.Dropdown(
        [(model.label, model.name) for model in pool.models], value=first.name, label="Model",
        visible=len(pool.models) > 1, interactive=True, elem_id="model",
    )  # fmt: skip
    page.model_state = gr.State(first.name)
    page.model_info, page.random_notice, page.licence = (
        gr.Markdown(text, visible=visible, elem_id=elem_id)
        for (text, visible), elem_id in zip(
            _notices(first, config), ("model-info", "random-weights", "licence"), strict=True
        )
    )
    return page


def _photo_widgets(gr, page: SimpleNamespace) -> None:
    page.face_state = gr.State(None)
    page.photo = gr.Image(
        label="1. Face photo", type="filepath", sources=["upload", "clipboard"], height=300, elem_id="photo"
    )
    with gr.Row():
        page.detected = gr.Image(label="Detected face", interactive=False, height=220, elem_id="detected")
        page.aligned = gr.Image(
            label="Aligned face (model input)", interactive=False, height=220, elem_id="aligned"
        )
    page.face_info = gr.Markdown(FACE_HINT, elem_id="face-info")
    page.face_choice = gr.Radio(
        [], label="Face (largest first)", visible=False, interactive=True, elem_id="face-choice"
    )


def _prompt_widgets(gr, page: SimpleNamespace, pool: ModelPool, config: DemoConfig) -> None:
    """The prompt, the negative prompt and the settings, starting from ``config.defaults`` and the first
    model's family."""
    defaults = config.defaults
    state = _form_state(handlers.family_defaults(pool.current), defaults)
    page.prompt = gr.Textbox(label="2. Prompt", value=defaults.prompt, lines=2, elem_id="prompt")
    gr.Examples([[text] for text in handlers.EXAMPLE_PROMPTS], inputs=[page.prompt], label="Example prompts")
    page.negative = gr.Textbox(label="Negative prompt", value=state.negative, lines=1, elem_id="negative")
    with gr.Accordion("Settings", open=True):
        with gr.Row():
            page.num_images = gr.Slider(
                1, config.max_images, value=defaults.num_images, step=1, label="Number of images"
            )
            page.steps = gr.Slider(
                1, config.max_steps, value=state.steps, step=1, label="Steps", elem_id="steps"
            )
        with gr.Row():
            page.guidance = gr.Slider(
                0.0, 15.0, value=state.guidance, step=0.5, label=state.guidance_label, info=state.guidance_info,
                elem_id="guidance",
            )  # fmt: skip
            page.true_cfg = gr.Slider(
                1.0, 10.0, value=state.true_cfg, step=0.5, label="True CFG", visible=state.show_true_cfg,
                info="true classifier-free guidance with the negative prompt; 1 turns it off (twice as fast)",
                elem_id="true-cfg",
            )  # fmt: skip
        page.size = gr.Dropdown(
            state.size_labels, value=state.size, label="Size (width×height)", elem_id="size"
        )
        with gr.Row(equal_height=True):
            page.seed = gr.Number(
                value=defaults.seed, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", scale=4,
                elem_id="seed",
            )  # fmt: skip
            page.randomise = gr.Button("Random seed", scale=1, elem_id="randomise")
    page.generate = gr.Button("3. Generate", variant="primary", elem_id="generate")


def _result_widgets(gr, page: SimpleNamespace) -> None:
    page.gallery = gr.Gallery(
        label="Results", columns=2, height=640, object_fit="contain", format="png",
        buttons=["download", "fullscreen"], interactive=False, elem_id="gallery",
    )  # fmt: skip
    page.files = gr.File(
        label="PNG files (with prompt, seed and settings in the metadata)", file_count="multiple",
        interactive=False, elem_id="files",
    )  # fmt: skip


def _wire_events(gr, page: SimpleNamespace, callbacks: _Callbacks) -> None:
    """Connect the widgets to the callbacks. Model switches and generation share one queue slot, so a
    pipeline is never moved while it generates."""
    progress_tracker = gr.Progress()  # Gradio fills in a per-request tracker for this default

    def on_generate(face, model_name, prompt, negative, num_images, steps, guidance, true_cfg, seed, size,
                    progress=progress_tracker):  # fmt: skip
        # Gradio finds the progress tracker by this signature's default, so the method is wrapped here.
        form = FormValues(prompt=prompt, negative_prompt=negative, num_images=num_images, steps=steps,
                          guidance_scale=guidance, seed=seed, true_cfg_scale=true_cfg)  # fmt: skip
        yield from callbacks.on_generate(face, model_name, form, size, progress)

    form_outputs = [getattr(page, name) for name in _FORM_FIELDS]
    page.model.input(
        callbacks.on_model, inputs=[page.model, page.model_state],
        outputs=[page.model, page.model_state, page.model_info, page.random_notice, page.licence, *form_outputs],
        concurrency_id="generate", concurrency_limit=1,
    )  # fmt: skip
    face_outputs = [page.face_state, page.detected, page.aligned, page.face_info, page.face_choice]
    page.photo.change(
        lambda: (None, None, None, "Looking for a face…", gr.skip()),
        outputs=face_outputs, queue=False, show_progress="hidden",
    ).then(
        callbacks.on_photo, inputs=page.photo, outputs=face_outputs, preprocess=False,
        concurrency_id="face", concurrency_limit=1,
    )  # fmt: skip
    page.face_choice.input(
        callbacks.on_photo, inputs=[page.photo, page.face_choice], outputs=face_outputs, preprocess=False,
        concurrency_id="face", concurrency_limit=1,
    )  # fmt: skip
    page.randomise.click(random_seed, outputs=page.seed, queue=False, show_progress="hidden")
    page.generate.click(
        on_generate,
        inputs=[page.face_state, page.model_state, page.prompt, page.negative, page.num_images, page.steps,
                page.guidance, page.true_cfg, page.seed, page.size],
        outputs=[page.gallery, page.files], concurrency_id="generate", concurrency_limit=1,
    )  # fmt: skip


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
