from vaelab._entry import main

raise SystemExit(main())
