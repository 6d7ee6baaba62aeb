"""Performance: the benchmark harness (``vlmtune bench``), the common-recipe baseline it compares against, and
the memory and step-time estimate (``vlmtune estimate``)."""
