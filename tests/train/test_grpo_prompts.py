"""GRPO's prompts show each image exactly as training gives it to the processor: stretched to ``data.image_size``,
or to a shrunk sample's own size."""

import dataclasses

from PIL import Image

from tests.conftest import write_jsonl
from vlmtune.config.schema import DataConfig
from vlmtune.core.sample import ImagePart
from vlmtune.data.formats import read_dataset
from vlmtune.data.settings import renderer_for
from vlmtune.train.grpo import prompt_dataset


def test_prompt_images_are_the_ones_the_processor_gets_in_training(tmp_path, tiny_dir):
    Image.new("RGB", (90, 40), (200, 30, 30)).save(tmp_path / "wide.png")
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": [
        {"role": "user", "content": [{"type": "image", "image": "wide.png"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "red"}]}] * 2)
    renderer = renderer_for(str(tiny_dir("qwen2_5_vl")), DataConfig(train=str(path), image_size=(56, 28)))
    plain, shrunk = read_dataset(path, "auto").samples
    shrunk = dataclasses.replace(shrunk, messages=tuple(
        dataclasses.replace(m, content=tuple(dataclasses.replace(p, size=(28, 28)) if isinstance(p, ImagePart) else p
                                             for p in m.content)) for m in shrunk.messages))
    given = []
    processor = renderer.processor

    class Spy:
        def __getattr__(self, name):
            return getattr(processor, name)

        def __call__(self, *args, images=None, **kwargs):
            given.append([image.copy() for image in images[0]])
            return processor(*args, images=images, **kwargs)

    renderer.processor = Spy()
    for sample in (plain, shrunk):
        renderer.encode(sample)
    renderer.processor = processor
    shown = [row["images"] for row in prompt_dataset(renderer, [plain, shrunk])]
    assert [[image.size for image in images] for images in shown] == [[(56, 28)], [(28, 28)]]
    assert [[image.tobytes() for image in images] for images in shown] == \
        [[image.tobytes() for image in images] for images in given]
