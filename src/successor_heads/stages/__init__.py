"""Stage runners: one module per pipeline stage, each with ``run(cfg, ...)``.

Workflow scripts and the command line call these; they load the model, call the library
modules (one per paper concept) and write every output atomically.
"""
