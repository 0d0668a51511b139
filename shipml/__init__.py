"""shipml: take a trained model into production on AWS, and run the same lifecycle locally."""

__version__ = "0.1.0"
