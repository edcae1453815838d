"""Shared by the workflow scripts: send logging and warnings to the rule's log file."""

import logging
import sys
import warnings


def setup_logging(log_path):
    handler = logging.FileHandler(log_path, mode="w")
    logging.basicConfig(level=logging.INFO, handlers=[handler, logging.StreamHandler(sys.stderr)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    return logging.getLogger("successor_heads")
