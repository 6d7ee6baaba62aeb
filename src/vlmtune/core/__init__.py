"""The ground floor: plain types every other package may import, importing nothing of vlmtune above it.

``sample``: the canonical sample every reader produces; ``errors``: the user errors of every layer under one
base, :class:`~vlmtune.core.errors.VlmtuneError`; ``names``: the built-in task, metric and data-format names the
config is checked against.
"""
