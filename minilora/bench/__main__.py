"""`python -m minilora.bench ...` is `minilora bench ...`."""
import sys

from minilora.cli.main import main

sys.exit(main(["bench", *sys.argv[1:]]))
