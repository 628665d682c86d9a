"""kdbundle's engine: everything but the terminal app, in pipeline order. Where things go:

    data/        datasets and their sessions: importers (BundleRec, JSONL), fetch, the demo data
    llm/         models: the registry and its built-in catalogue, backends (llama.cpp, OpenAI-compatible),
                 prompts, generation, strict parsing of answers
    knowledge/   what a teacher knows: patterns, sampling, the teacher, distillation (rules, thoughts),
                 knowledge records and sets, in-context learning; formats.py is the table of formats
    student/     a student learns it: SFT examples and their encoding, weights, training (here or on
                 another machine), export to GGUF
    evaluation/  how well it works: metrics (the one table of metrics), baselines, evaluate, grids, reports
    jobs/        the job runner and one handler module per job kind
    cli/         the `kdbundle` command line: one module per command group
    types, errors, progress, config: the vocabulary every layer shares; files: capped reads of imported
    files and names that become file names; schema: the parts of every file format's model; embeddings: the sentence model;
    browse: the read-only queries behind the app's screens

Layers (tests/test_layers.py holds the code to them): cli|tui -> jobs -> evaluation|student ->
knowledge -> llm -> data -> store. A module imports only its own layer or lower ones.
"""
