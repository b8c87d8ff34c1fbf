"""Beam runner flags for tests: FnApiRunner never touches the network (Prism is a download)."""

FNAPI = ["--runner=FnApiRunner"]
MULTIPROCESS = [
    "--runner=DirectRunner",
    "--direct_num_workers=2",
    "--direct_running_mode=multi_processing",
]
