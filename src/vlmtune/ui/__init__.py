"""``vlmtune ui``: a web UI (gradio) over the command line's own functions: chat with base and tuned models side
by side, follow runs, check data, start and stop training. Needs the ``ui`` extra (``pip install 'vlmtune[ui]'``).
"""
