"""Data: formats in, one canonical sample out, rendered and masked for a model family."""

from .collate import Collator, EncodedDataset
from .errors import DataError, RecordError, SampleError
from .formats import get_reader, read_samples, reader_names, register_reader
from .render import IGNORE_INDEX, Renderer, assistant_labels
from .sample import ImagePart, Message, Sample, TextPart

__all__ = [
    "IGNORE_INDEX", "Collator", "DataError", "EncodedDataset", "ImagePart", "Message", "RecordError", "Renderer",
    "Sample", "SampleError", "TextPart", "assistant_labels", "get_reader", "read_samples", "reader_names",
    "register_reader",
]
