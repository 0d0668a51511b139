"""The scheduled materialisation job's Lambda handler."""
