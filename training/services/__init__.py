"""Writes of the training domain, in the web process: launch jobs, end and relaunch them, move rounds."""
