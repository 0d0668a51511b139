"""Serving: the one FastAPI app (`create_app`) and the model it serves (`ModelHolder`)."""
