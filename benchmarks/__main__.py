"""`make bench`: runs every benchmark and prints its table."""

from __future__ import annotations

import asyncio

from benchmarks import ingress_throughput


def main() -> None:
    asyncio.run(ingress_throughput.main())


if __name__ == "__main__":
    main()
