"""Batch scoring: files of any size through the same predictor as the API, in bounded memory."""
