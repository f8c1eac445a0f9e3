"""`--engine ray`: the same records as the local engine, from a Ray cluster (docs/cluster.md).

cluster.py connects (which cluster, and leaving it as it was found), sizing.py turns the cluster's
CPUs and GPUs into the plan's resource requests, plan.py builds the Ray Data plan of one window of
inputs, worker.py is the code that runs on the workers (decode tasks, inference actors), watchdog.py
turns a run that stops making progress into an error, and run.py is the entry point the runner calls.

Ray is imported only inside this package, and only when a run uses it: importing this package does not.
"""
