"""One board as a cluster node.

``boards`` (what board this is), ``cmdline`` and ``boot_files`` (kernel arguments in the boot
files each OS image ships), ``root_move`` (root file system to an SSD), ``io_schedulers``,
``irqs`` and ``tuning`` (performance), ``log_files`` and ``mail`` (logging, mail relay),
``node_settings`` (validation of the armnode pillar).
"""
