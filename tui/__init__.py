"""kdbundle.tui: the Textual app, a thin shell over kdbundle.engine and kdbundle.store."""
