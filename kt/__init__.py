"""kt: serve giant mixture-of-experts models (and small dense ones) on one CPU+GPU machine."""
__version__ = "0.1.0"


def __getattr__(name):  # `import kt` stays light: torch loads only when the API is used
    if name == "LLM":
        from kt.api import LLM

        return LLM
    raise AttributeError(name)
