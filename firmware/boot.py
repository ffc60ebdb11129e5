# Runs first at every reset. Tiny on purpose: all decisions live in bootflow (compiled).
# boot_decision stays in the namespace main.py runs in (the ESP ports run both in one).
boot_decision = None
try:
    from ias import bootflow

    boot_decision = bootflow.run()
except Exception as e:  # never stop here: main.py must still run and can recover
    import sys

    sys.print_exception(e)
