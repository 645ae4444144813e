"""`make bench`: the relay's overhead, throughput, concurrency, memory and cold start."""
