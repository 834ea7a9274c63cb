"""tailguard: scheduled retraining of query-item relevance models, guarded on the long tail."""

__version__ = "0.1.0"
