{%- from "armnode/map.jinja" import armnode with context %}
# fsck at every boot (and whatever else pillar adds), and the I/O scheduler per device class.
armnode-kernel-args:
  armnode.kernel_args:
    - present: {{ armnode.kernel_args.present | json }}
    - absent: {{ armnode.kernel_args.absent | json }}
    - require:
      - armnode: armnode-settings-valid
      - pkg: armnode-packages-installed

armnode-io-schedulers:
  armnode.io_scheduler:
    - schedulers: {{ armnode.io_schedulers | json }}
    - require:
      - armnode: armnode-settings-valid

{%- if armnode.reboot_when_required %}
# Opt-in: reboot (after a delay) when a change needs one; runs after everything else.
armnode-reboot-if-required:
  armnode.rebooted_if_required:
    - delay_minutes: {{ armnode.reboot_delay_minutes }}
    - order: last
{%- endif %}
