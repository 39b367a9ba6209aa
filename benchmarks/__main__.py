"""`make bench`: runs every benchmark and prints its table."""

from __future__ import annotations

import asyncio

from benchmarks import (
    end_to_end_latency,
    end_to_end_throughput,
    hostile_requests,
    ingress_throughput,
)


def main() -> None:
    hostile_requests.main()
    asyncio.run(ingress_throughput.main())
    asyncio.run(end_to_end_latency.main())
    asyncio.run(end_to_end_throughput.main([]))


if __name__ == "__main__":
    main()
