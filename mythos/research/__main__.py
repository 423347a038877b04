from mythos.research.cli import main

raise SystemExit(main())
