from stemwatch.cli import main

raise SystemExit(main())
