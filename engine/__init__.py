"""kdbundle.engine: data, knowledge, models, training, evaluation. Never imports the TUI."""
