"""Background jobs: the runner (runner.py) and one handler module per job kind (runner.JOB_KINDS)."""
