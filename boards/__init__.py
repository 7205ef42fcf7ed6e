"""FPGA builds: board registry, measurement harness and the Yosys/nextpnr flow.

`build.build(core_factory, board, build_dir=..., target_mhz=...)` builds a stream core for
"icebreaker", "ulx3s-85f" or "orangecrab-25f" and returns utilization and Fmax.
"""
