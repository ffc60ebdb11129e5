# The client's main loop and the user's app, wired in device.py.
from ias import device

device.main()
