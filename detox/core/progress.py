"""Progress bars on a terminal only: in a sweep's log file a bar's every refresh would be noise, and
the pipeline logs one line per stage there instead."""

import sys

from tqdm.auto import tqdm

if not sys.stderr.isatty():  # transformers' own bars (loading and writing weights) too
    from transformers.utils import logging as _transformers_logging

    _transformers_logging.disable_progress_bar()


def progress(iterable=None, **kwargs):
    """tqdm, shown only when standard error is a terminal."""
    return tqdm(iterable, disable=not sys.stderr.isatty(), **kwargs)


def on_terminal() -> bool:
    return sys.stderr.isatty()
