# The client's main loop and the user's app, wired in device.py, with what boot.py decided
# (boot.py and main.py share one namespace; None when boot.py failed or did not run).
from ias import device

device.main(globals().get("boot_decision"))
