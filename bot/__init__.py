"""salesbot: a self-hosted runtime for Salesbot-style chatbots."""

__version__ = "0.1.0"
__all__ = ["__version__"]
