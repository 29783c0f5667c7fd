from lftrain.cli import main

raise SystemExit(main())
