"""Folders for the ecosystem are checked as a user's machine loads them: with torchvision, which the published
Qwen-VL, LLaVA-OneVision, SmolVLM and InternVL processors need. Without it these tests fail, never skip."""

import pytest
from PIL import Image
from transformers.utils import is_torchvision_available


@pytest.fixture(autouse=True)
def _torchvision_installed():
    if not is_torchvision_available():
        pytest.fail("torchvision is not installed: the ecosystem tests load folders with plain transformers as a "
                    "user's machine does; `make setup` installs torch==2.14.1 and torchvision==0.29.1", pytrace=False)


@pytest.fixture(scope="session")
def shape_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("ecosystem_image") / "shape.png"
    Image.new("RGB", (90, 60), (200, 30, 30)).save(path)
    return path
