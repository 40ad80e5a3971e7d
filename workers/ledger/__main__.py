"""``python -m workers.ledger``: the ledger without the CLI (what ``flowpay run-ledger`` runs)."""

from __future__ import annotations

import sys

from workers.core.config import load_settings
from workers.core.errors import FlowPayError
from workers.ledger.consumer import serve


def main() -> None:
    try:
        serve(load_settings())
    except FlowPayError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
