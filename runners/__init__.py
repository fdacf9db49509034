"""Everything that starts, finds or stops a runner or a local service, and the process hooks they need.

    pipeline.py       make_pipeline(options): the runner the flags name, checked first (Flink's jar, Java,
                      a reachable cluster); whether workers run on this machine
    flink_cluster.py  a local Flink session cluster (`cattag flink-cluster`), the job server's Maven recipe
                      (flink-job-server/pom.xml, package data; $CATTAG_FLINK_POM names another)
    flink_loopback.py FlinkRunner whose job server (and Flink embedded in it) listens on loopback
    sdk_worker.py     `cattag-sdk-worker`: the SDK worker a TaskManager starts (PROCESS environment)
    loopback.py       this process's gRPC servers (worker pools, DirectRunner channels) bound to loopback
    sockets.py        which TCP ports a process tree listens on, and where (from /proc)
    prism.py          Beam's Prism runner built from source and cached, and a Prism server this process owns
    ports.py          loopback ports for the servers above
    worker_exit.py    local SDK worker processes exit without the native teardown
    process_exit.py   the `cattag` process likewise, after its exit handlers
    quiet.py          native libraries' stderr noise filtered (launcher and local workers)

Imports nothing of cattag's but `schemas/` (the cache location): the pipelines use it, it uses none of them.
"""
