"""`python -m cotx_rl <stage> ...`: the `cotx-rl` command."""

from cotx_rl.cli import main

raise SystemExit(main())
