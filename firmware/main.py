# The client's main loop and the user's app, wired in device.py.
import device

device.main()
