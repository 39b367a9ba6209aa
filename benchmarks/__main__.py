"""`make bench`: runs every benchmark and prints its table."""

from __future__ import annotations

import asyncio

from benchmarks import end_to_end_latency, ingress_throughput


def main() -> None:
    asyncio.run(ingress_throughput.main())
    asyncio.run(end_to_end_latency.main())


if __name__ == "__main__":
    main()
