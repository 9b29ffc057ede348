"""The `minilora` command line: `main` in minilora.cli.main, one module per subcommand beside it."""
from minilora.cli.main import main

__all__ = ["main"]
