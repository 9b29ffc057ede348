"""python -m param_calc: the param-calc command line (see param_calc.cli)."""
import sys

from param_calc.cli import main

sys.exit(main())
