"""The demo in a real browser: Debian's Chromium driven by Playwright, against the tiny random pipeline.

Everything stays on 127.0.0.1: the page is served on a free loopback port, Gradio analytics are off, and the
browser aborts (and the test reports) any request to another host. A screenshot goes to artifacts/demo/.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
FACE_PHOTO = REPO / "tests" / "data" / "faces" / "astronaut.png"
ARTIFACTS = REPO / "artifacts" / "demo"
CHROMIUM = os.environ.get("FACECLIP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 20_000
GENERATE_TIMEOUT_MS = 180_000
PROMPT = "a portrait photo of an astronaut in a garden"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_pipeline():
    """The pipeline under test: tiny random weights (the images are noise), offline."""
    from faceclip.registry import load_pipeline

    return load_pipeline("tiny-random")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Debian's chromium is not installed ({CHROMIUM} not found): apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("gradio", reason='the demo needs gradio: pip install "faceclip[demo]"')
    from faceclip.demo import DemoConfig, FormValues, create_demo, launch_demo

    config = DemoConfig(
        output_dir=tmp_path_factory.mktemp("demo-outputs"),
        model_name="tiny-random",
        defaults=FormValues(prompt="", num_images=2, steps=2, seed=7, width=128, height=128),
        max_file_size="1mb",
        show_license_notice=False,
    )
    demo = create_demo(make_pipeline(), config)
    url = launch_demo(demo, config, host="127.0.0.1", port=_free_port(), block=False, quiet=True)
    assert urlparse(url).hostname == "127.0.0.1"
    yield url.rstrip("/"), config
    demo.close()


@pytest.fixture
def page(browser, server):
    url, _ = server
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    outside: list[str] = []

    def keep_local(route):
        if urlparse(route.request.url).hostname in {"127.0.0.1", None, ""} or route.request.url.startswith(
            "data:"
        ):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", keep_local)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#generate").wait_for()
    yield page
    context.close()
    assert not outside, f"the page tried to reach other hosts: {outside}"


def _upload(page, path: Path) -> None:
    page.locator("#photo input[type=file]").set_input_files(str(path))


def _wait_for_face(page) -> None:
    page.locator("#face-info").get_by_text("Face found").wait_for(timeout=60_000)
    page.locator("#aligned img").wait_for()


def test_choose_among_several_faces(page, tmp_path):
    group = Image.new("RGB", (720, 384), (255, 255, 255))
    with Image.open(FACE_PHOTO) as face:  # the same person twice, the second one smaller and mirrored
        group.paste(face.convert("RGB"), (0, 0))
        group.paste(
            face.convert("RGB").resize((300, 300)).transpose(Image.Transpose.FLIP_LEFT_RIGHT), (400, 40)
        )
    group.save(tmp_path / "two-people.png")

    _upload(page, tmp_path / "two-people.png")
    info = page.locator("#face-info")
    info.get_by_text("2 faces found; using face 1").wait_for(timeout=60_000)
    page.locator("#face-choice input[value='2']").check()
    info.get_by_text("2 faces found; using face 2").wait_for(timeout=60_000)
    page.locator("#aligned img").wait_for()
    page.screenshot(path=str(ARTIFACTS / "demo-two-faces.png"), full_page=True)


def test_upload_generate_and_download(page, server):
    _, config = server

    _upload(page, FACE_PHOTO)
    _wait_for_face(page)
    page.locator("#detected img").wait_for()

    page.locator("#prompt textarea").fill(PROMPT)
    seed = page.locator("#seed input")
    page.locator("#randomise").click()
    page.wait_for_function("() => document.querySelector('#seed input').value !== '7'")
    first_seed = int(seed.input_value())
    assert 0 <= first_seed <= 2**32 - 1
    # Enough steps that the progress text stays up long enough to be seen (2 tiny steps take 0.1 s).
    page.locator("#steps input[type='number']").fill("40")
    page.locator("#steps input[type='number']").press("Enter")
    page.locator("#generate").click()
    progress = page.locator("#gallery").get_by_text(re.compile(r"Image [12]/2, step \d+/40"))
    progress.first.wait_for(timeout=GENERATE_TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / "demo-progress.png"), full_page=True)
    gallery_images = page.locator("#gallery img")
    page.wait_for_function(
        "() => document.querySelectorAll('#gallery img').length >= 2", timeout=GENERATE_TIMEOUT_MS
    )
    page.locator("#files").get_by_text(".png").first.wait_for()
    assert gallery_images.count() == 2
    page.screenshot(path=str(ARTIFACTS / "demo-generated.png"), full_page=True)

    # Every result is a PNG on disk carrying its settings ...
    saved = sorted(Path(config.output_dir).glob("*.png"))
    assert len(saved) == 2
    # ... and the page offers that very file for download, metadata included.
    link = page.locator("#files a").first
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    with Image.open(io.BytesIO(response.body())) as image:
        assert image.format == "PNG" and image.size == (128, 128)
        meta = json.loads(image.text["faceclip"])
    assert meta["prompt"] == PROMPT and meta["steps"] == 40
    assert meta["seed"] in (first_seed, first_seed + 1)
    assert meta["model"] == "tiny-random"


def test_errors_are_shown_in_plain_words_and_the_app_keeps_serving(page, server, tmp_path):
    face_info = page.locator("#face-info")

    # Generating before any photo is uploaded.
    page.locator("#generate").click()
    page.get_by_text("Upload a photo with a face first").first.wait_for()

    # A file with an image name that is not an image: refused by the app, in words.
    fake = tmp_path / "holiday.png"
    fake.write_text("this is not a picture")
    _upload(page, fake)
    face_info.get_by_text("This file is not an image we can read").wait_for()
    page.screenshot(path=str(ARTIFACTS / "demo-not-an-image.png"), full_page=True)

    # A file that is not even named like an image: refused by the page before upload.
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    _upload(page, notes)
    page.get_by_text("Invalid file type").first.wait_for()

    # A photo without a face.
    blank = tmp_path / "wall.png"
    Image.new("RGB", (320, 240), (180, 170, 160)).save(blank)
    _upload(page, blank)
    face_info.get_by_text("No face found in this photo").wait_for(timeout=60_000)

    # A file over the upload limit (1 MB here) never reaches the handlers.
    big = tmp_path / "huge.png"
    big.write_bytes(os.urandom(1_500_000))
    _upload(page, big)
    page.get_by_text("exceed", exact=False).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "demo-too-large.png"), full_page=True)
    assert page.get_by_text("Traceback").count() == 0

    # The app still works after all of that.
    _upload(page, FACE_PHOTO)
    _wait_for_face(page)


def test_server_files_are_not_served(server):
    url, _ = server
    for target in (REPO / "pyproject.toml", Path("/etc/passwd")):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{url}/gradio_api/file={target}", timeout=10)
        assert info.value.code in (403, 404), f"{target}: HTTP {info.value.code}"


@pytest.fixture(scope="module")
def two_model_server(tmp_path_factory):
    """A page offering tiny-random, tiny-random-flux and a FaceT5-FLUX folder that fails to load."""
    pytest.importorskip("gradio", reason='the demo needs gradio: pip install "faceclip[demo]"')
    from faceclip.demo import DemoConfig, DemoModel, FormValues, ModelPool, create_demo, launch_demo
    from faceclip.registry import load_pipeline, resolve_model

    broken = tmp_path_factory.mktemp("models") / "broken-flux"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "FaceT5FluxPipeline"}))
    names = ["tiny-random", "tiny-random-flux", str(broken)]
    models = [DemoModel.from_source(name, resolve_model(name)) for name in names]
    pool = ModelPool(models, load_pipeline)
    config = DemoConfig(
        output_dir=tmp_path_factory.mktemp("demo-outputs"),
        defaults=FormValues(prompt=PROMPT, num_images=1, steps=2, seed=7, width=128, height=128),
    )
    demo = create_demo(pool, config)
    url = launch_demo(demo, config, host="127.0.0.1", port=_free_port(), block=False, quiet=True)
    yield url.rstrip("/"), config, broken
    demo.close()


def _choose_model(page, label: str) -> None:
    page.locator("#model input").click()
    page.get_by_role("option", name=label).click()


def test_choose_a_model_of_the_other_family(browser, two_model_server):
    url, config, broken = two_model_server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#generate").wait_for()
    assert page.locator("#true-cfg").count() == 0 or not page.locator("#true-cfg").is_visible()
    page.get_by_text("Guidance scale").first.wait_for()

    _choose_model(page, "tiny-random-flux (FaceT5-FLUX)")
    page.locator("#true-cfg").wait_for(state="visible", timeout=60_000)
    page.get_by_text("Distilled guidance").first.wait_for()
    page.locator("#model-info").get_by_text("tiny-random-flux").wait_for()
    page.screenshot(path=str(ARTIFACTS / "demo-flux.png"), full_page=True)

    _choose_model(page, f"{broken} (FaceT5-FLUX)")
    page.locator("#model-info").get_by_text("Model not changed").wait_for(timeout=60_000)
    assert page.locator("#model input").input_value() == "tiny-random-flux (FaceT5-FLUX)"
    assert page.get_by_text("Traceback").count() == 0

    _upload(page, FACE_PHOTO)
    _wait_for_face(page)
    steps = page.locator("#steps input[type=number]")
    steps.fill("2")
    steps.press("Enter")
    page.locator("#generate").click()
    page.locator("#files").get_by_text(".png").first.wait_for(timeout=GENERATE_TIMEOUT_MS)
    [png] = Path(config.output_dir).glob("*.png")
    with Image.open(png) as image:
        meta = json.loads(image.text["faceclip"])
    assert (meta["model"], meta["family"], meta["true_cfg"], meta["steps"]) == (
        "tiny-random-flux",
        "facet5-flux",
        3.5,
        2,
    )
    page.close()
