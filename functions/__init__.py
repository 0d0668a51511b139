"""Lambda handlers: thin adapters that parse an event, call `shipml`, and respond.

Each capability adds its handler here (inference, pipeline steps, monitors, features).
"""
