"""``python -m freetickets`` (also what ``torchrun -m freetickets`` runs)."""
from freetickets.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
