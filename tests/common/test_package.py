import subprocess
import sys

import faceclip
from faceclip.cli import build_parser


def test_import_is_cheap_and_exports_resolve():
    code = "import sys, faceclip; assert 'torch' not in sys.modules and 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(faceclip.__all__) == {"__version__", *faceclip._LAZY}
    for name in faceclip._LAZY:
        assert getattr(faceclip, name) is not None


def test_cli_help_lists_every_command_without_heavy_imports():
    code = (
        "import sys; from faceclip.cli import build_parser; build_parser(); "
        "heavy = {'torch', 'diffusers', 'transformers', 'gradio', 'cv2'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    help_text = build_parser().format_help()
    for command in ("convert", "align", "generate", "prepare", "train", "eval", "demo"):
        assert command in help_text


def test_cli_default_model_is_the_released_repo():
    from faceclip.cli._options import RELEASED_MODEL
    from faceclip.pipelines.sdxl.family import RELEASED_REPO

    assert RELEASED_MODEL == RELEASED_REPO
    args = build_parser().parse_args(["generate", "--face", "x.jpg", "--prompt", "p"])
    assert args.model == RELEASED_MODEL and args.device == "auto" and args.dtype == "auto"


def test_cli_hides_only_the_torchvision_fallback_notice():
    """diffusers' import makes transformers advise installing torchvision; the command line hides that line only."""
    code = (
        "import logging, faceclip.cli as cli\n"
        "cli.main(['align', '/no/such/photo.png', '--out', '/tmp/unused'])\n"
        "log = logging.getLogger('transformers.utils.import_utils')\n"
        "log.warning('`CLIPImageProcessor` requires torchvision (not installed); falling back')\n"
        "log.warning('another transformers warning')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "another transformers warning" in done.stderr
    assert "requires torchvision" not in done.stderr
