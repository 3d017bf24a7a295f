"""The ``ecosnap`` command: run the stack, make demo data, train."""
