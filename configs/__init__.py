"""ml_collections configuration files; select one with `launch.py --config configs/<name>.py`."""
