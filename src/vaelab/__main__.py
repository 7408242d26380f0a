import sys

from vaelab import _interrupt

_interrupt.leave_on_interrupt()  # first, before the command line's imports (vaelab.cli.main installs it too)
try:
    from vaelab.cli import main
except KeyboardInterrupt:
    print("vaelab: interrupted", file=sys.stderr)
    raise SystemExit(_interrupt.Interrupted.exit_code) from None

raise SystemExit(main())
