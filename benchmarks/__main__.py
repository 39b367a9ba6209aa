"""`make bench`: runs every benchmark and prints its table."""

from __future__ import annotations

import asyncio

from benchmarks import end_to_end_latency, hostile_requests, ingress_throughput


def main() -> None:
    hostile_requests.main()
    asyncio.run(ingress_throughput.main())
    asyncio.run(end_to_end_latency.main())


if __name__ == "__main__":
    main()
