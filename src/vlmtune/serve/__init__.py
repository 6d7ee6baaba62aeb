"""``vlmtune serve``: the base model and its adapters behind an OpenAI-compatible HTTP API.

``engine`` loads and generates (also used by the web UI), ``openai_api`` translates requests and responses,
``app`` is the FastAPI application, ``backend`` chooses between it and ``vllm serve``."""
