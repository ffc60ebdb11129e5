# Runs first at every reset. Tiny on purpose: all decisions live in bootflow (compiled).
try:
    from ias import bootflow

    bootflow.run()
except Exception as e:  # never stop here: main.py must still run and can recover
    import sys

    sys.print_exception(e)
