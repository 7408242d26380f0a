from vaelab.cli import main

raise SystemExit(main())
