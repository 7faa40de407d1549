"""`python -m tikosms`: the `tikosms` command (how `tikosms serve` starts its delivery process).

A delivery process asked to stop while it is still starting (its SIGTERM handler is installed
once its event loop runs) notes it here and stops cleanly once started, instead of dying of
the signal's default action halfway through its start."""

import signal
import sys

if "--child-of" in sys.argv:
    from tikosms import early_stop

    signal.signal(signal.SIGTERM, early_stop.ask)

from tikosms.cli import main  # after the handler: the imports take a while

main()
