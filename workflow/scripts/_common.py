"""Shared by the workflow scripts: send logging, warnings and any traceback to the rule's log."""

import logging
import sys
import warnings


def setup_logging(log_path):
    handler = logging.FileHandler(log_path, mode="w")
    logging.basicConfig(level=logging.INFO, handlers=[handler, logging.StreamHandler(sys.stderr)],
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    log = logging.getLogger("successor_heads")

    def excepthook(etype, value, tb):
        log.error("stage failed", exc_info=(etype, value, tb))

    sys.excepthook = excepthook
    return log
